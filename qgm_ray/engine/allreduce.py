"""The exact all-reduce both engines use when every client mixes the mean of all payloads
(`centralized_*` rules, the `complete` graph): O(n P) work, one (D,) row per block sent.

    partial_b = block_sum(payload of block b)          # in the block's process
    mean      = mean_of_partials([partial_0, ...], n)  # block order; at one place
    mixed     = mean, for every row of every block

Why the two engines agree bit for bit. Every float operation here is an *elementwise* add (or
the final division) of two tensors of the same shape: each output element is one IEEE-754
operation on two given operands, correctly rounded, so no kernel, thread count or vector
width can change it (unlike `torch.sum`, `cumsum` or a matmul, which may split, reorder or
widen a reduction). The order of the adds is fixed by the data alone:
  - inside a block, left to right over its rows (row 0 + row 1, + row 2, ...);
  - across blocks, left to right in block order (block 0 + block 1, + block 2, ...);
  - then one division by n.
Both engines hold the same blocks (qgm_ray.layout), so they do the same adds on the same
values. With one block, or blocks of one client, it is the plain left-to-right sum of the n
rows in position order, so those two layouts agree too (tests/test_block.py compares them);
other layouts group the same sum differently (float rounding, ~1e-7 relative).
"""
from __future__ import annotations

from typing import Sequence

import torch


def block_sum(rows: torch.Tensor) -> torch.Tensor:
    """(k, D) -> (D,): the rows added left to right (see the module docstring). k adds of one
    row each: the same work as the sum, O(k D)."""
    total = rows[0].clone()
    for r in range(1, rows.shape[0]):
        total.add_(rows[r])
    return total


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
