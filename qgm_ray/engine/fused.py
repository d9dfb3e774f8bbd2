"""Fused rounds on the Ray engine: many rounds per ClientActor call, payloads through shared memory.

The round-per-call dataflow (engine/coordinator.py) pays, every round, a call per actor, an
object per exported payload row, and the coordinator's submission and collection: on a small
model that is as much CPU as the step itself. Where every ClientActor runs on one node, the
actors can instead exchange their payload rows through engine/mailbox.py's shared-memory
outboxes and run a whole stretch of rounds per call; the coordinator then only collects
the losses. Each block mixes the same rows, from the same sources, in the same order with
`block_mix`, so the numbers are the same bits as the per-round dataflow and the local engine.

This module decides when (`fusable`), how many rounds a call takes (`RoundsPerCall`) and what
each actor's part is (`plans`): pure functions of the exchange, no Ray.
"""
from __future__ import annotations

from typing import Sequence, Union

# A call's length where `ray.rounds_per_call` is auto: long enough that the call's fixed cost
# (a few ms) is noise, short enough that a stop request or a progress bar waits little for it.
TARGET_CALL_SECONDS = 0.25
FIRST_CALL_ROUNDS = 4
MAX_ROUNDS_PER_CALL = 1024


def fusable(setting: Union[int, str], ex, topology, compressed: bool, nodes: Sequence[str]) -> bool:
    """Whether this chunk's rounds may run fused: asked for (`ray.rounds_per_call` auto or > 1),
    synchronous gossip on a graph fixed for the run, payloads on the plain float32 wire, no
    round barriers (SlowMo's outer step gathers every block between rounds), every actor on
    one node (the outboxes are files in that node's memory)."""
    return (setting != 1 and ex.schedule is None and not ex.all_reduce and not compressed and not ex.barriers
            and not getattr(topology, "time_varying", False) and len(set(nodes)) == 1)


class RoundsPerCall:
    """Rounds in the next call: the setting, or (auto) what made the last call last about
    TARGET_CALL_SECONDS."""

    def __init__(self, setting: Union[int, str]):
        self.auto = setting == "auto"
        self.size = FIRST_CALL_ROUNDS if self.auto else int(setting)

    def observe(self, rounds: int, seconds: float) -> None:
        if self.auto and rounds > 0:
            per_round = max(seconds / rounds, 1e-6)
            self.size = max(1, min(MAX_ROUNDS_PER_CALL, round(TARGET_CALL_SECONDS / per_round)))


def plans(ex, t: int) -> list[dict]:
    """Each block's part in round t's exchange (the same every round of a fixed graph):

    - rows, sources: its rows of W and the positions it mixes from other blocks (`wiring`);
    - at: (block, outbox row) holding each of `sources`, in that order;
    - export: the rows of the block (row indices) that other blocks mix, in outbox order;
    - readers: the blocks that mix any of them;
    - width: floats per payload row."""
    exported = [ex.exports(t, b) for b in range(len(ex.groups))]
    slot = {p: (b, r) for b, ps in enumerate(exported) for r, p in enumerate(ps)}
    readers: list[set] = [set() for _ in ex.groups]
    out = []
    for b, group in enumerate(ex.groups):
        rows, sources = ex.wiring(t, b)
        at = [slot[j] for j in sources]
        for owner, _ in at:
            readers[owner].add(b)
        row_of = {p: r for r, p in enumerate(group)}
        out.append({"rows": rows, "sources": list(sources), "at": at, "export": [row_of[p] for p in exported[b]],
                    "width": int(ex.payload_floats)})
    for b, plan in enumerate(out):
        plan["readers"] = sorted(readers[b])
    return out
