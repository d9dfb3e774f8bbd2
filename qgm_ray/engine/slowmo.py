"""SlowMo's outer step in the engines (the math: algorithms/slowmo.py).

It needs every client's parameters after the gossip of an outer round, so it is a global
barrier, taken right after that round's post-mix and before the next round's pre-mix:

- LocalEngine: `outer_step(blocks, lr)` after the blocks' post_mix.
- Ray: the Coordinator splits the usual one-call-per-round there: a post-only `step`, then
  every actor's `slowmo_rows` (its post-mixed rows), the first actor's `exact_average` of all
  of them (a reduce), every actor's `slowmo_step` with that average (a broadcast), then the
  next round's pre-only `step`. Each actor runs its calls in submission order; the coordinator
  only passes refs and waits for nothing.

Both engines average the same (n, P) float32 rows on the CPU with the same ordered sum
(`exact_average`), and each block applies the same elementwise update on its device, so Ray
equals the local engine bit for bit. With `algorithm.slowmo_tau: 0` (the default) none of
this runs: the algorithm is not wrapped and the round loops take their usual path.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from qgm_ray.algorithms.slowmo import exact_average, is_outer_round, slowmo_of

__all__ = ["average_of", "block_outer_step", "outer_step", "outer_step_bytes", "rows_on_cpu", "slowmo_of"]


def rows_on_cpu(block) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(k, P) float32 parameters of a block on the CPU, what the average is taken over, and
    its (k,) push-sum weights on a directed graph (else None)."""
    weights = block.weight.detach().to("cpu", torch.float32) if block.push_sum else None
    return block.params.detach().to("cpu", torch.float32), weights


def average_of(per_block: Sequence[tuple]) -> torch.Tensor:
    """The exact average of every client: the blocks' `rows_on_cpu` in position order."""
    rows = torch.cat([r for r, _ in per_block])
    weights = None if per_block[0][1] is None else torch.cat([w for _, w in per_block])
    return exact_average(rows, weights)


def block_outer_step(block, xbar: torch.Tensor, lr: float) -> None:
    block.algorithm.outer_step(block.state, block.params, xbar, lr)
    if block.push_sum:
        block.weight.fill_(1.0)   # after an exact average every client holds the consensus with weight 1


def outer_step(blocks: Sequence, lr: float) -> None:
    """The outer step of a LocalEngine (every block in one process)."""
    xbar = average_of([rows_on_cpu(b) for b in blocks])
    for b in blocks:
        block_outer_step(b, xbar, lr)


def outer_step_bytes(tau: int, n: int, t: int, payload_bytes: int) -> int:
    """Bytes of round t's exact average, counted as a ring all-reduce of the parameters
    (2 (n-1)/n of them per client, as `round_bytes` counts the all-reduce rules), on outer
    rounds only. The official code leaves this traffic out of its bit count; we keep it in
    `bytes_sent` so that SlowMo's communication is compared honestly."""
    return int(round(2 * (n - 1) * payload_bytes)) if is_outer_round(t, tau) else 0
