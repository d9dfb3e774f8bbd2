"""CIFAR ResNets (He et al., 2016, section 4.2): 3 stages of 16/32/64 channels, depth 6n+2.

Follows the official QGM code (pcode/models/resnet.py, resnet_evonorm.py): 1x1-conv + norm
shortcuts where the shape changes, He-normal conv init (fan-out), PyTorch-default linear init.
Global average pooling is adaptive, so 28px or 8px inputs work too (same as AvgPool2d(8) at 32px).

Normalisation variants:
  bn       BatchNorm with running statistics (buffers).
  gn       GroupNorm(groups=2) everywhere (the official group_norm_num_groups=2 setting).
  evonorm  EvoNorm-S0 replaces every BN+ReLU pair; the BNs not followed by a ReLU (after the
           second conv of a block and in the shortcut) stay BatchNorm without running
           statistics, as in the official code. No buffers at all.
"""
import math
from functools import partial

import torch.nn as nn

from qgm_ray.errors import ConfigError
from qgm_ray.models.evonorm import EvoNorm2dS0


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn_relu(planes, norm):
    return nn.Sequential(norm(planes), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, norm, norm_act):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.norm_act1 = norm_act(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.norm2 = norm(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), norm(planes)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.norm2(self.conv2(self.norm_act1(self.conv1(x))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNetCifar(nn.Module):
    def __init__(self, input_shape, num_classes, depth=20, norm="bn", groups=2, scaling=1,
                 evonorm_groups=32, v1=True):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"resnet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        if len(input_shape) != 3:
            raise ConfigError(f"resnet needs image input (C, H, W), got input_shape {tuple(input_shape)}")
        if norm == "bn":
            norm_fn = nn.BatchNorm2d
            norm_act = partial(_bn_relu, norm=norm_fn)
        elif norm == "gn":
            norm_fn = partial(nn.GroupNorm, groups)
            norm_act = partial(_bn_relu, norm=norm_fn)
        elif norm == "evonorm":
            norm_fn = partial(nn.BatchNorm2d, track_running_stats=False)
            norm_act = partial(EvoNorm2dS0, groups=evonorm_groups, v1=v1)
        else:
            raise ConfigError(f"unknown resnet norm {norm!r}; choose one of: bn, gn, evonorm")
        n = (depth - 2) // 6
        widths = [int(16 * scaling), int(32 * scaling), int(64 * scaling)]

        self.conv1 = _conv3x3(input_shape[0], widths[0])
        self.norm_act1 = norm_act(widths[0])
        layers, in_planes = [], widths[0]
        for stage, planes in enumerate(widths):
            blocks = []
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, norm_fn, norm_act))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))

    def forward(self, x):
        x = self.norm_act1(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.classifier(self.avgpool(x).flatten(1))


def resnet20(input_shape, num_classes, norm="bn", groups=2, scaling=1):
    """groups: GroupNorm groups when norm="gn"."""
    return ResNetCifar(input_shape, num_classes, depth=20, norm=norm, groups=groups, scaling=scaling)


def resnet_evonorm20(input_shape, num_classes, groups=32, v1=True, scaling=1):
    """groups: EvoNorm group-std groups (capped at the channel count); v1=False: official code."""
    return ResNetCifar(input_shape, num_classes, depth=20, norm="evonorm", scaling=scaling,
                       evonorm_groups=groups, v1=v1)
