"""Tolerances that follow the arithmetic, not one CPU's kernels.

Two ways of computing the same float32 gradient (one vmapped, grouped convolution over k
clients vs k separate ones; a vectorised vs a scalar reduction) sum the same terms in another
order. The classic bound for a sum of K terms (Higham, *Accuracy and Stability of Numerical
Algorithms*, 4.2) is |fl(s) - s| <= (K - 1) u sum|x_i|, with u = 2^-24 the unit roundoff, so
two orders differ by at most twice that. We compare whole gradient vectors in the 2-norm and
take ||x|| of the result for sum|x_i| (no catastrophic cancellation across the whole vector:
a tensor whose gradient is ~0 -- a convolution's bias in front of BatchNorm -- only carries
rounding noise of the size of its terms, which the whole vector's norm covers, while a
per-element or per-tensor relative test of that noise fails on one CPU and passes on another).

K is the longest dot product in a forward or backward pass: a layer's fan-in (forward) or the
batch times the spatial positions of a weight gradient (backward). The bounds below are
worst cases; measured differences are 10-100x smaller on Intel and AMD, scalar and AVX2
kernels alike (tests/test_block.py's kernel-path test runs them under both).

Why the comparisons run in float64: a ReLU network is not smooth. A rounding difference of
1e-7 that moves a pre-activation across 0 routes one gradient term differently, and measured
on cnn1d / mnist1d, 1 of 12 client-rounds in float32 had such a kink: a 2% gradient difference
that no rounding bound covers. In float64 rounding is 2^29 times smaller and a kink that close
to a pre-activation is out of reach, while the batching code under test is the same.
"""
from __future__ import annotations

import math

import torch
from torch import nn

def unit_roundoff(dtype=torch.float32) -> float:
    """u: half the machine epsilon (2^-24 for float32, 2^-53 for float64)."""
    return torch.finfo(dtype).eps / 2


def longest_reduction(model: nn.Module, batch: int, input_shape) -> int:
    """K for `model` on batches of `batch` inputs of `input_shape` (channels first)."""
    fan_in = max((math.prod(p.shape[1:]) for p in model.parameters() if p.dim() >= 2), default=1)
    spatial = math.prod(input_shape[1:]) if len(input_shape) > 1 else 1
    return max(fan_in, batch * spatial)


def reduction_bound(k: int, dtype=torch.float32) -> float:
    """Relative 2-norm difference allowed between two summation orders of length-k sums."""
    return 2 * (k - 1) * unit_roundoff(dtype)


def normwise_error(actual: torch.Tensor, expected: torch.Tensor, dim=None) -> torch.Tensor:
    """||actual - expected|| / ||expected||, in float64 (along `dim` for per-row errors)."""
    a, e = actual.double(), expected.double()
    return (a - e).norm(dim=dim) / e.norm(dim=dim)


def assert_normwise_close(actual, expected, bound: float, what: str = "", dim=None) -> None:
    err = normwise_error(actual, expected, dim)
    worst = float(err.max())
    assert worst <= bound, f"{what}: normwise error {worst:.3g} > bound {bound:.3g}"
