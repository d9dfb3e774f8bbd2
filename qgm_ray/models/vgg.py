"""VGG for 32px inputs (Simonyan & Zisserman, 2015), as in the official QGM code (pcode/models/vgg.py).

The CIFAR variant: 3x3 conv stacks with 2x2 max-pools (configurations A = VGG-11 and
D = VGG-16), then a 512-512 classifier with dropout. Five pools take 32px to 1x1, so the
flatten size is the last stage's width (worked out from input_shape, so 64px also works).

Options: norm = bn (official `vgg11_bn`), none (official `vgg11`; the RelaySGD/QGM
follow-ups' CIFAR VGG-11 has no normalisation) or gn (GroupNorm, `groups` groups);
`width` scales every conv and classifier width (the official VGG_S `vgg_scaling`);
`dropout` is the classifier's dropout probability (0.5 there).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qgm_ray.errors import ConfigError
from qgm_ray.models.norms import check_image_input, check_norm, he_fan_out_init, norm_layer

_CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
_NORMS = ("bn", "gn", "none")


class VGG(nn.Module):
    def __init__(self, input_shape, num_classes, depth, norm="bn", groups=2, width=1.0, dropout=0.5):
        super().__init__()
        check_image_input(input_shape, f"vgg{depth}")
        check_norm(norm, f"vgg{depth}", _NORMS)
        if not 0 < float(width):
            raise ConfigError(f"vgg{depth} width must be > 0, got {width!r}")
        if not 0 <= float(dropout) < 1:
            raise ConfigError(f"vgg{depth} dropout must be in [0, 1), got {dropout!r}")
        layers, channels, side = [], input_shape[0], min(input_shape[1:])
        for v in _CONFIGS[depth]:
            if v == "M":
                if side < 2:
                    raise ConfigError(f"vgg{depth} needs inputs of at least 32px (5 max-pools), got {tuple(input_shape)}")
                layers.append(nn.MaxPool2d(2, 2))
                side //= 2
                continue
            out = max(1, int(v * width))
            layers.append(nn.Conv2d(channels, out, 3, padding=1))
            if norm != "none":
                layers.append(norm_layer(norm, out, groups, f"vgg{depth}", _NORMS))
            layers.append(nn.ReLU(inplace=True))
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        hidden = max(1, int(512 * width))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        he_fan_out_init(self, zero_linear_bias=False)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg11(input_shape, num_classes, norm="bn", groups=2, width=1.0, dropout=0.5):
    """norm: bn | gn | none; groups: GroupNorm groups; width: channel multiplier."""
    return VGG(input_shape, num_classes, 11, norm=norm, groups=groups, width=width, dropout=dropout)


def vgg16(input_shape, num_classes, norm="bn", groups=2, width=1.0, dropout=0.5):
    """norm: bn | gn | none; groups: GroupNorm groups; width: channel multiplier."""
    return VGG(input_shape, num_classes, 16, norm=norm, groups=groups, width=width, dropout=dropout)
