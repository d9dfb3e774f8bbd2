"""DenseNet-BC (Huang et al., 2017) for 32px inputs, as in the official QGM code
(pcode/models/densenet.py): a 3x3 stem of 2*growth channels, 3 dense blocks of
(depth - 4) / 6 bottleneck layers (norm-ReLU-conv1x1 to 4*growth, norm-ReLU-conv3x3 to
growth, concatenated), transitions that compress the channels by `compression` and
average-pool by 2, a final norm, ReLU and global average pooling.

The defaults are small (depth 40, growth 12: DenseNet-BC-40-12, ~0.18M parameters) so
tests and CPU runs stay cheap; the paper-scale DenseNet-BC-100-12 is depth=100. norm = bn
(official) or gn (GroupNorm, `groups` groups).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from qgm_ray.errors import ConfigError
from qgm_ray.models.norms import check_image_input, check_norm, he_fan_out_init, norm_layer


class _Bottleneck(nn.Module):
    def __init__(self, channels, growth, drop_rate, norm):
        super().__init__()
        inter = 4 * growth
        self.norm1 = norm(channels)
        self.conv1 = nn.Conv2d(channels, inter, 1, bias=False)
        self.norm2 = norm(inter)
        self.conv2 = nn.Conv2d(inter, growth, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x):
        out = self.conv1(F.relu(self.norm1(x)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(F.relu(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return torch.cat([x, out], dim=1)


class _Transition(nn.Module):
    def __init__(self, channels, out_channels, drop_rate, norm):
        super().__init__()
        self.norm = norm(channels)
        self.conv = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x):
        out = self.conv(F.relu(self.norm(x)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return F.avg_pool2d(out, 2)


class DenseNetBC(nn.Module):
    def __init__(self, input_shape, num_classes, depth=40, growth=12, compression=0.5, norm="bn", groups=2,
                 dropout=0.0):
        super().__init__()
        check_image_input(input_shape, "densenet")
        check_norm(norm, "densenet")
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"densenet (BC) depth must be 6n+4 (10, 16, 22, 40, 100, ...), got {depth}")
        if not (isinstance(growth, int) and growth >= 1):
            raise ConfigError(f"densenet growth must be an integer >= 1, got {growth!r}")
        if not 0 < float(compression) <= 1:
            raise ConfigError(f"densenet compression must be in (0, 1], got {compression!r}")
        if not 0 <= float(dropout) < 1:
            raise ConfigError(f"densenet dropout must be in [0, 1), got {dropout!r}")

        def make_norm(c):
            return norm_layer(norm, c, groups, "densenet")

        layers_per_block = (depth - 4) // 6
        channels = 2 * growth
        modules = [nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(layers_per_block):
                modules.append(_Bottleneck(channels, growth, float(dropout), make_norm))
                channels += growth
            if block < 2:
                out = int(math.floor(channels * compression))
                modules.append(_Transition(channels, out, float(dropout), make_norm))
                channels = out
        modules.append(make_norm(channels))
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        he_fan_out_init(self, zero_linear_bias=True)

    def forward(self, x):
        return self.classifier(self.pool(F.relu(self.features(x))).flatten(1))


def densenet_bc(input_shape, num_classes, depth=40, growth=12, compression=0.5, norm="bn", groups=2, dropout=0.0):
    """depth: 6n+4 (40, 100, ...); growth: channels each layer adds; compression at transitions."""
    return DenseNetBC(input_shape, num_classes, depth=depth, growth=growth, compression=compression, norm=norm,
                      groups=groups, dropout=dropout)
