"""The exact all-reduce both engines use when every client mixes the mean of all payloads
(`centralized_*` rules, the `complete` graph): O(n P) work, one (D,) row per block sent.

    partial_b = block_sum(payload of block b)          # in the block's process
    mean      = mean_of_partials([partial_0, ...], n)  # block order; at one place
    mixed     = mean, for every row of every block

Why the two engines agree bit for bit. Every float operation here is an *elementwise* add (or
the final division) of two tensors of the same shape: each output element is one IEEE-754
operation on two given operands, correctly rounded, so no kernel, thread count or vector
width can change it (unlike `torch.sum` or a matmul, which may split and reorder a reduction).
The order of the adds is fixed by the data alone:
  - inside a block, a pairwise tree over its rows whose shape depends only on k (level by
    level, the first half of the rows plus the second half; an odd last row is carried up);
  - across blocks, a left-to-right chain in block order (block 0 + block 1, + block 2, ...);
  - then one division by n.
Both engines hold the same blocks (qgm_ray.layout), so they build the same tree and the same
chain over the same values. The pairwise tree also keeps the rounding error O(log k) rather
than O(k) for a running sum.
"""
from __future__ import annotations

from typing import Sequence

import torch


def block_sum(rows: torch.Tensor) -> torch.Tensor:
    """(k, D) -> (D,): the rows' sum by a fixed pairwise tree (see the module docstring)."""
    x = rows
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        top = x[:half] + x[half:2 * half]          # elementwise: one add per element
        x = top if x.shape[0] % 2 == 0 else torch.cat([top, x[2 * half:]])
    return x[0].clone() if x is rows else x[0]


def mean_of_partials(partials: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """The blocks' partial sums added in block order, divided by the number of clients n."""
    total = partials[0].clone()
    for p in partials[1:]:
        total.add_(p.to(total.device))
    return total.div_(n)


def spread(mean: torch.Tensor, k: int) -> torch.Tensor:
    """(D,) -> (k, D): every row of a block mixes the same mean. A real copy, not an expanded
    view: rules keep slices of `mixed` in their state and update them in place."""
    return mean.reshape(1, -1).repeat(k, 1)


def all_reduce(payloads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of the rows of every block's (k_b, D) payload, in one process (the local engine's
    form of what the Ray engine does across ClientActors)."""
    n = sum(p.shape[0] for p in payloads)
    return mean_of_partials([block_sum(p) for p in payloads], n)
