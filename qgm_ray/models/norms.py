"""Normalisation layers picked by name, shared by the VGG / WideResNet / DenseNet builders.

  bn    BatchNorm with running statistics (the official code's choice everywhere).
  gn    GroupNorm with `groups` groups: batch-independent, no buffers, the usual fix for
        BatchNorm under heterogeneous (non-iid) client data.
  none  no normalisation (VGG only: the RelaySGD/QGM follow-ups train VGG-11 without it).
"""
from __future__ import annotations

import torch.nn as nn

from qgm_ray.errors import ConfigError


def norm_layer(kind: str, channels: int, groups: int, model: str, allowed=("bn", "gn")) -> nn.Module:
    if kind not in allowed:
        raise ConfigError(f"unknown {model} norm {kind!r}; choose one of: {', '.join(allowed)}")
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        if channels % groups:
            raise ConfigError(f"{model}: {channels} channels do not split into groups={groups} GroupNorm groups")
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def check_norm(kind: str, model: str, allowed=("bn", "gn")) -> None:
    if kind not in allowed:
        raise ConfigError(f"unknown {model} norm {kind!r}; choose one of: {', '.join(allowed)}")


def check_image_input(input_shape, model: str) -> None:
    if len(input_shape) != 3:
        raise ConfigError(f"{model} needs image input (C, H, W), got input_shape {tuple(input_shape)}")


def he_fan_out_init(module: nn.Module, zero_linear_bias: bool) -> None:
    """The official code's init for these models: conv weights ~ N(0, 2/fan_out), norms at
    (1, 0); conv biases and linear weights keep PyTorch's default; linear biases are zeroed
    in WideResNet/DenseNet but not in VGG (as there)."""
    import math

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif zero_linear_bias and isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
