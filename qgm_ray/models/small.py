"""Small models for offline datasets: a LeNet-style cnn, the MNIST-1D paper's cnn1d, an mlp.

None has batch-norm, so a model's whole state is its parameters. Flatten sizes are worked out
from input_shape (by a dry run on zeros), so each model fits any input size it can see.
"""
import torch
import torch.nn as nn

from qgm_ray.errors import ConfigError


def _flat_size(features: nn.Module, input_shape) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


class CNN(nn.Module):
    """LeNet-5 as in the official code (pcode/models/lenet.py): conv5-6, pool, conv5-16, pool,
    fc 120-84. 28px inputs get padding 2 on the first conv (classic MNIST LeNet); inputs
    smaller than 28px (8x8 digits) use 3x3 'same' convolutions instead."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        if len(input_shape) == 2:
            input_shape = (1, *input_shape)
        if len(input_shape) != 3:
            raise ConfigError(f"cnn needs image input (C, H, W), got input_shape {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        side = min(input_shape[1:])
        if side >= 32:
            k, p1, p2 = 5, 0, 0
        elif side >= 28:
            k, p1, p2 = 5, 2, 0
        else:
            k, p1, p2 = 3, 1, 1
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, k, padding=p1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, k, padding=p2), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_size(self.features, self.input_shape), 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.classifier(self.features(x).flatten(1))


class CNN1d(nn.Module):
    """ConvBase of the MNIST-1D paper (Greydanus, 2020): three strided conv1d layers of 25
    channels and a linear head; 5,210 parameters at length 40 and 10 classes."""

    def __init__(self, input_shape, num_classes, channels=25):
        super().__init__()
        if len(input_shape) == 1:
            input_shape = (1, *input_shape)
        if len(input_shape) != 2:
            raise ConfigError(f"cnn1d needs sequence input (C, L) or (L,), got input_shape {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        self.features = nn.Sequential(
            nn.Conv1d(input_shape[0], channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Linear(_flat_size(self.features, self.input_shape), num_classes)

    def forward(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        return self.classifier(self.features(x).flatten(1))


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=(100, 100)):
        super().__init__()
        sizes = [int(torch.Size(input_shape).numel()), *[int(h) for h in hidden]]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(1))
