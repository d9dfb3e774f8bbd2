"""The exchange stage: everything between a round's `pre_mix` and its `post_mix`.

For a run of n clients held in blocks (`groups`: the topology positions of each block, from
qgm_ray.layout) it owns

- the mixing: W(t) of the topology, or the exact all-reduce (engine/allreduce.py) where every
  client mixes the plain mean; which rows each block mixes from which sources (`wiring`) and
  which of its payloads other blocks read (`exports`);
- the payload's wire format (`Wire`, engine/wire.py): how a block's payload rows travel
  between processes and how many bytes one payload is;
- the bytes: per round (`round_bytes`, what a RoundRecord reports), per edge (`edges`)
  and across nodes (`cross_node_bytes`);
- the round barriers (engine/barriers.py, SlowMo's outer step): which are due, and their bytes.

Both engines hold one. LocalEngine calls `mix` with every block's payloads in one process;
the Ray Coordinator asks `wiring` / `exports` per block and lets the ClientActors mix the
payloads that Ray moved (each with `block_mix`, so both compute the same bits). A compressed
run's exchange (engine/choco.py, CHOCO-Gossip) is a subclass: its own `Wire` (the compressor's
bytes), `mix` and `payload_bytes_at`, with per-client state in each block.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray.engine import allreduce, placement
from qgm_ray.engine.base import (RoundRecord, averages_everyone, block_mix, exports, gossip_bytes, mixing_matrix,
                                 round_bytes, wiring)
from qgm_ray.engine.wire import FLOAT32, Wire
from qgm_ray.sparse_w import SparseW

__all__ = ["Exchange", "cross_node_bytes"]


class Exchange:
    """The exchange of a run of `sum(len(g) for g in groups)` clients in these blocks.

    `topology`: the run's (qgm_ray.topology) graph; `centralized`: the rule mixes the mean of
    everyone (an all-reduce) whatever the graph; `payload_floats`: D, the floats of one
    client's payload; `barriers`: engine/barriers.py's, for this run's algorithm."""

    # An asynchronous run's schedule (qgm_ray/async_schedule.py, engine/async_run.py): None for
    # synchronous rounds. The run's clock reads it.
    schedule = None

    def __init__(self, topology, centralized: bool, groups: Sequence[Sequence[int]], payload_floats: int,
                 barriers: Sequence = (), wire: Wire = FLOAT32):
        self.topology, self.centralized = topology, centralized
        self.groups = [list(g) for g in groups]
        self.n = sum(len(g) for g in self.groups)
        self.payload_floats = int(payload_floats)
        self.barriers = list(barriers)
        self.wire = wire
        # Every client mixes the mean of all payloads: the O(n P) all-reduce, never W = 1/n.
        self.all_reduce = averages_everyone(topology, centralized)
        # position -> (block, row in block)
        self._where = {p: (b, r) for b, g in enumerate(self.groups) for r, p in enumerate(g)}

    @property
    def payload_bytes(self) -> int:
        """Bytes of one client's payload on the wire."""
        return self.wire.nbytes(self.payload_floats)

    def payload_bytes_at(self, t: int) -> int:
        """Bytes of one client's payload on the wire in round t (a compressed exchange's size
        may change over the run: engine/choco.py's keep warm-up)."""
        return self.payload_bytes

    def W(self, t: int) -> SparseW:
        """The mixing matrix of round t (not asked for on all-reduce rounds)."""
        return mixing_matrix(self.topology, self.centralized, self.n, t)

    def wiring(self, t: int, b: int) -> tuple[list, list[int]]:
        """Block b's rows of W(t) [(sources, weights)] and the positions held by other blocks
        that it mixes, in increasing order (engine/base.py `wiring`)."""
        return wiring(self.W(t), self.groups[b])

    def exports(self, t: int, b: int) -> list[int]:
        """Positions of block b whose round-t payload another block mixes."""
        return exports(self.W(t), self.groups[b])

    def mix(self, t: int, payloads: Sequence[torch.Tensor], blocks: Sequence = ()) -> list[torch.Tensor]:
        """Round t's mixing of every block's (k_b, D) payload in one process: each block's
        (k_b, D) mixed rows, the same bits as the Ray engine's actors compute (same sums in
        the same order). Every block mixes before any post_mix: a payload may alias its
        sender's state. `blocks` (the blocks of the payloads) are read by an exchange that
        keeps per-client state (engine/choco.py); plain mixing needs only the payloads."""
        if self.all_reduce:
            mean = allreduce.all_reduce(payloads)   # what the ClientActors compute, same order
            return [allreduce.spread(mean, p.shape[0]) for p in payloads]
        mixed = []
        for b, own in enumerate(payloads):
            rows, sources = self.wiring(t, b)
            received = [payloads[self._where[j][0]][self._where[j][1]] for j in sources]
            mixed.append(block_mix(own, self.groups[b], rows, sources, received))
        return mixed

    def due(self, t: int) -> list:
        """The barriers that end round t, in registration order."""
        return [x for x in self.barriers if x.due(t)]

    def run_barriers(self, t: int, blocks: Sequence, lr: float) -> None:
        """Round t's due barriers over blocks held in this process (the local engine)."""
        for barrier in self.due(t):
            reduced = barrier.reduce([barrier.gather(b) for b in blocks])
            for b in blocks:
                barrier.apply(b, reduced, lr)

    def round_bytes(self, t: int) -> int:
        """Bytes put on the wire in round t: the gossip (or all-reduce) of the payloads and the
        barriers that end the round. Counted per client, so it does not depend on the layout."""
        pb = self.payload_bytes_at(t)
        nbytes = round_bytes(self.topology, self.centralized, self.n, t, pb) if self.all_reduce \
            else gossip_bytes(self.W(t), pb)
        # A barrier's exact average travels as float32 values, whatever the gossip's wire.
        return nbytes + sum(x.nbytes(self.n, t, FLOAT32.nbytes(self.payload_floats)) for x in self.barriers)

    def edges(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Round t's gossip per directed edge as arrays (sender, receiver, bytes), positions,
        receivers in increasing order and each receiver's senders as W(t)'s row lists them: what
        the run's clock (runner/timeline.py) reads for thousands of clients without a loop per
        client. Its sum is the gossip part of `round_bytes` (barriers are collective, not per
        edge). An all-reduce is counted as `round_bytes` counts it: each payload up to position
        0 and the mean back down."""
        pb = self.payload_bytes_at(t)
        if self.all_reduce:
            others, root = np.arange(1, self.n, dtype=np.int64), np.zeros(self.n - 1, dtype=np.int64)
            src, dst = np.concatenate([others, root]), np.concatenate([root, others])
        else:
            W = self.W(t)
            dst = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(W.row_ptr))
            off = W.cols != dst
            src, dst = W.cols[off], dst[off]
        return src, dst, np.full(len(src), pb, dtype=np.int64)

    def edge_bytes(self, t: int) -> dict[tuple[int, int], int]:
        """`edges(t)` as {(sender, receiver): bytes}."""
        src, dst, nbytes = self.edges(t)
        return {(j, i): b for j, i, b in zip(src.tolist(), dst.tolist(), nbytes.tolist())}

    def cross_node_bytes(self, t: int, nodes: Sequence) -> int:
        """Payload bytes that cross nodes in round t with block b on node `nodes[b]`."""
        if self.all_reduce:
            return placement.allreduce_cross_node_bytes(nodes, self.payload_bytes_at(t))
        return placement.cross_node_bytes(self.W(t), self.groups, nodes, self.payload_bytes_at(t))

    def record(self, t: int, loss: float, nodes: Optional[Sequence] = None) -> RoundRecord:
        """What round t reports: its loss and its bytes (crossing nodes: with blocks on `nodes`;
        None: one process, nothing crosses)."""
        cross = self.cross_node_bytes(t, nodes) if nodes is not None else 0
        return RoundRecord(round=t, loss=loss, bytes_sent=self.round_bytes(t), bytes_cross_node=cross)


def cross_node_bytes(topology, centralized: bool, groups: Sequence[Sequence[int]], t: int, nodes: Sequence,
                     payload_bytes: int) -> int:
    """Payload bytes that cross nodes in round t with block b (positions groups[b]) on node
    `nodes[b]` (engine/placement.py's cost model)."""
    if averages_everyone(topology, centralized):
        return placement.allreduce_cross_node_bytes(nodes, payload_bytes)
    return placement.cross_node_bytes(topology.sparse(t), groups, nodes, payload_bytes)
