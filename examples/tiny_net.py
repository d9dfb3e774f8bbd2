"""A model: `builder(input_shape, num_classes, **model.options) -> nn.Module`.

    model: {name: examples.tiny_net:tiny_mlp, options: {width: 16}}

qgm-ray seeds torch's generator before calling it, so every client starts from the same
weights. Keep to modules torch.func can vmap (no BatchNorm running statistics)."""
import math

from torch import nn


def tiny_mlp(input_shape, num_classes, width=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_classes))
