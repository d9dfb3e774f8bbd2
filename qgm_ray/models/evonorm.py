"""EvoNorm-S0 (Liu et al., 2020, "Evolving Normalization-Activation Layers").

A batch-independent normalisation + activation: y = x * sigmoid(v1 * x) / group_std(x) * weight + bias.
It has no running statistics, so a model built from it is all parameters, and a client's
output never depends on the other samples of its batch: the QGM paper uses it to take
batch-statistics out of the picture under heterogeneous data.

The official QGM code (pcode/models/resnet_evonorm.py) uses the "efficient" variant, with
v1 fixed to 1 (plain swish); `v1=False` gives exactly that. Its group std uses 32 groups
(capped at the channel count) and the unbiased variance, as here.
"""
import torch
import torch.nn as nn


def group_std(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """Std over each group of channels (and all positions) per sample, broadcast back to x."""
    n, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"EvoNorm: {c} channels do not split into {groups} groups")
    xg = x.reshape(n, groups, -1)
    std = (xg.var(dim=2, keepdim=True) + eps).sqrt()
    return std.expand_as(xg).reshape(x.shape)


class EvoNorm2dS0(nn.Module):
    def __init__(self, num_features: int, groups: int = 32, eps: float = 1e-5, v1: bool = True):
        super().__init__()
        self.groups = min(groups, num_features)
        self.eps = eps
        shape = (1, num_features, 1, 1)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.v1 = nn.Parameter(torch.ones(shape)) if v1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"EvoNorm2dS0 expects (N, C, H, W), got {tuple(x.shape)}")
        gate = torch.sigmoid(x if self.v1 is None else self.v1 * x)
        return x * gate / group_std(x, self.groups, self.eps) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, groups={self.groups}, eps={self.eps}, v1={self.v1 is not None}"
