"""SlowMo's outer step as a round barrier of the engines (the math: algorithms/slowmo.py; how
the engines run a barrier: engine/barriers.py).

It needs every client's parameters after the gossip of an outer round, so it is a barrier,
taken right after that round's post-mix and before the next round's pre-mix:

    gather  = each block's (k, P) float32 parameters on the CPU, and its push-sum weights
    reduce  = the exact average of all of them, summed in position order (`exact_average`)
    apply   = the outer step of every row from that average (and push-sum weights back to 1)

Both engines average the same (n, P) float32 rows on the CPU with the same ordered sum, and
each block applies the same elementwise update on its device, so Ray equals the local engine
bit for bit. With `algorithm.slowmo_tau: 0` (the default) the algorithm is not wrapped, this
module's factory returns None, and the engines take no barrier.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from qgm_ray.algorithms.slowmo import exact_average, is_outer_round, slowmo_of
from qgm_ray.engine.barriers import register


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


def outer_step_bytes(tau: int, n: int, t: int, payload_bytes: int) -> int:
    """Bytes of round t's exact average, counted as a ring all-reduce of the parameters
    (2 (n-1)/n of them per client, as `round_bytes` counts the all-reduce rules), on outer
    rounds only. The official code leaves this traffic out of its bit count; we keep it in
    `bytes_sent` so that SlowMo's communication is compared honestly."""
    return int(round(2 * (n - 1) * payload_bytes)) if is_outer_round(t, tau) else 0


class SlowMoBarrier:
    """engine/barriers.py's Barrier for a SlowMo-wrapped rule."""
    name = "slowmo"

    def __init__(self, slowmo):
        self.slowmo = slowmo

    def due(self, t: int) -> bool:
        return self.slowmo.due(t)

    def nbytes(self, n: int, t: int, payload_bytes: int) -> int:
        return outer_step_bytes(self.slowmo.tau, n, t, payload_bytes)

    def gather(self, block) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return rows_on_cpu(block)

    def reduce(self, parts: Sequence[tuple]) -> torch.Tensor:
        return average_of(parts)

    def apply(self, block, reduced: torch.Tensor, lr: float) -> None:
        block_outer_step(block, reduced, lr)

    def joiner_state(self, block) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_slow, buf) of the block's first client: the run's slow state (every client holds
        the same one)."""
        return self.slowmo.slow_state(block.state, 0)

    def adopt(self, block, rows: list[int], state: tuple) -> None:
        self.slowmo.adopt(block.state, rows, state)


@register
def slowmo_barrier(algorithm) -> Optional[SlowMoBarrier]:
    wrapped = slowmo_of(algorithm)
    return SlowMoBarrier(wrapped) if wrapped is not None else None
