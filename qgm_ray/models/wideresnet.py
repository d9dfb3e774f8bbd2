"""Wide ResNet (Zagoruyko & Komodakis, 2016) for 32px inputs, as in the official QGM code
(pcode/models/wideresnet.py): depth 6n+4, 3 stages of 16k/32k/64k channels (k = `width`),
pre-activation blocks (norm-ReLU-conv), 1x1 conv shortcuts where the shape changes,
optional dropout between the two convs, final norm-ReLU and global average pooling.

`wideresnet28` is depth 28 (n = 4): WRN-28-10 with width=10 is the usual CIFAR model; the
default width is 10 as well. norm = bn (official) or gn (GroupNorm, `groups` groups).
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from qgm_ray.errors import ConfigError
from qgm_ray.models.norms import check_image_input, check_norm, he_fan_out_init, norm_layer


class _Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride, drop_rate, norm):
        super().__init__()
        self.norm1 = norm(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.norm2 = norm(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.norm1(x))
        # A projection shortcut takes the pre-activated input, an identity one the raw input
        # (as in the official block).
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = F.relu(self.norm2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideResNet(nn.Module):
    def __init__(self, input_shape, num_classes, depth=28, width=10, norm="bn", groups=2, dropout=0.0):
        super().__init__()
        name = f"wideresnet{depth}"
        check_image_input(input_shape, name)
        check_norm(norm, name)
        if (depth - 4) % 6 or depth < 10:
            raise ConfigError(f"wideresnet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
        if not (isinstance(width, int) and width >= 1):
            raise ConfigError(f"{name} width must be an integer >= 1, got {width!r}")
        if not 0 <= float(dropout) < 1:
            raise ConfigError(f"{name} dropout must be in [0, 1), got {dropout!r}")

        def make_norm(c):
            return norm_layer(norm, c, groups, name)

        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(input_shape[0], channels[0], 3, padding=1, bias=False)
        stages, in_planes = [], channels[0]
        for stage, planes in enumerate(channels[1:]):
            blocks = []
            for b in range(n):
                blocks.append(_Block(in_planes, planes, 2 if stage > 0 and b == 0 else 1, float(dropout), make_norm))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.norm = make_norm(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        he_fan_out_init(self, zero_linear_bias=True)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(F.relu(self.norm(x))).flatten(1))


def wideresnet28(input_shape, num_classes, width=10, norm="bn", groups=2, dropout=0.0):
    """width: widen factor k (WRN-28-k); norm: bn | gn; dropout between a block's convs."""
    return WideResNet(input_shape, num_classes, depth=28, width=width, norm=norm, groups=groups, dropout=dropout)
