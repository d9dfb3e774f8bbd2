"""A ClientActor's side of the round-per-call dataflow (engine/coordinator.py): one call per
round finishes the previous round of the block and starts the next, so a round costs one actor
call. Between the two calls the block's own payloads of the pending round wait here.

Two kinds of round: gossip (`step`: each row mixes its W row over payloads, plain or compressed
by CHOCO, engine/choco.py) and the exact all-reduce (`step_mean`: every row mixes the mean of all
payloads, engine/allreduce.py, whose root is the first actor: `mean_of`)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray.engine import allreduce
from qgm_ray.engine.arrays import as_tensor
from qgm_ray.engine.base import block_mix


class RoundCalls:
    """The rounds of one block at `positions` (the topology index of each row), payloads on
    `wire` (engine/wire.py), compressed by `choco` (or None)."""

    def __init__(self, block, positions: Sequence[int], wire, choco):
        self.block, self.positions, self.wire, self.choco = block, list(positions), wire, choco
        self.payload: Optional[torch.Tensor] = None  # own payloads of the pending round (k, D)
        self.q: Optional[torch.Tensor] = None        # own compressed differences of the pending round (k, D)

    def step(self, post: Optional[tuple], pre_lr: Optional[float], sources: Sequence[int], received: Sequence,
             export: Optional[Sequence[int]] = None, t: Optional[int] = None, source_slots: Sequence[int] = ()):
        """post = (lr, rows): finish the previous round; rows[c] = (positions, weights) row c
        mixes, in order; `received` are the payloads of `sources` (positions held elsewhere),
        resolved by Ray from the refs the coordinator passed. pre_lr: start the next round and
        return the payloads of the positions in `export` (those another actor mixes next round;
        None: every row), one array each, in that order, followed by a small record (the
        record alone when nothing is exported: one return value, not a 1-tuple).
        A compressed run (engine/choco.py) also needs `t` (the round pre_lr starts; post
        finishes t - 1) and `source_slots` (the slots at `sources`, whose keys decode them);
        its payloads travel as the compressor's uint8 wire rows."""
        if post is not None:
            lr, rows = post
            if self.choco is None:
                mixed = block_mix(self.payload, self.positions, rows, sources, self.wire.decode(received))
            else:
                q_in = self.choco.decode(received, source_slots, t - 1, self.payload.shape[1])
                mixed = self.choco.receive(self.block.exchange_state, self.payload, self.q, self.positions, rows,
                                           sources, q_in)
            self.block.post_mix(mixed, lr)
            self.payload = self.q = None
        if pre_lr is None:
            return {"losses": []}
        self.payload = self.block.pre_mix(pre_lr)
        record = {"losses": self.block.losses.tolist()}   # one read of the device per round
        if export is None:
            rows = list(range(self.block.k))
        else:
            # Only what leaves the actor becomes an object: a ring of 8,192-client blocks
            # exports 2 rows each, not 8,192 (each return value is an object Ray tracks).
            row_of = {p: r for r, p in enumerate(self.positions)}
            rows = [row_of[p] for p in export]
        if self.choco is not None:
            self.q, wire = self.choco.send(self.block.exchange_state, self.payload, self.block.ids, t, rows)
            return (*wire, record) if rows else record
        if not rows:
            return record
        sent = self.payload if len(rows) == self.block.k else self.payload[rows]
        return (*self.wire.encode(sent), record)

    def step_mean(self, post_lr: Optional[float], pre_lr: Optional[float], mean: Optional[np.ndarray]):
        """`step` when every client mixes the mean of all payloads (engine/allreduce.py): finish
        the previous round with `mean` (resolved from the ref of `mean_of`), then return this
        round's partial sum of the block's payload rows (one (D,) array) and the record."""
        if post_lr is not None:
            self.block.post_mix(allreduce.spread(as_tensor(mean).to(self.block.device), self.block.k), post_lr)
        if pre_lr is None:
            return {"losses": []}
        partial = allreduce.block_sum(self.block.pre_mix(pre_lr))
        return partial.detach().to("cpu", torch.float32).numpy(), {"losses": self.block.losses.tolist()}


def mean_of(n: int, partials: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of every block's partial sum, passed in block order (the first actor is the
    root of the all-reduce; every actor's next `step_mean` reads the result's ref)."""
    return allreduce.mean_of_partials([as_tensor(p) for p in partials], n).numpy()
