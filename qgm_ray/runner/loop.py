"""The straight loop of a run: train a chunk of rounds, record, evaluate, resize, checkpoint.

No I/O: the loop reads and writes the state record and calls its injected parts, the engine
(`qgm_ray.engine.base.Engine`) and the run's `LoopParts` (the metrics sink, the checkpoint, the
clock, the stop flag). A fake engine and fake parts test it whole; `runner.Run` gives it the
real ones.
"""
from __future__ import annotations

import math
from typing import Optional, Protocol, Sequence

from qgm_ray.engine.base import Engine, RoundRecord
from qgm_ray.runner import timeline
from qgm_ray.runner.plan import RunPlan, RunState

DIVERGENCE_LOSS = 1e3


class Stopped(Exception):
    """The engine stopped at a round boundary because a stop signal came."""


class LoopParts(Protocol):
    def record(self, row: dict) -> None: ...          # the metrics sink: one row per evaluation
    def checkpoint(self) -> None: ...                 # the checkpoint store: the state now
    def clock(self) -> float: ...                     # training seconds so far
    def should_stop(self) -> bool: ...                # a stop signal came
    def on_round(self, record: RoundRecord) -> None: ...   # each finished round (the progress bar)
    def log(self, msg: str) -> None: ...


def train_to_end(state: RunState, plan: RunPlan, engine: Engine, parts: LoopParts) -> None:
    """The chunks between the points where the run regains control (evaluations, resizes,
    checkpoints), from the state's round to the end. Raises Stopped on a stop signal (the state
    is that of the round the engine stopped at) and whatever the engine raises (EngineFailure)."""
    for stop_at in plan.stops(state.round):
        records = engine.train(range(state.round, stop_at), plan.lr, parts.on_round,
                               should_stop=parts.should_stop)
        add_up(state, records)
        if plan.clock is not None:
            timeline.advance(state, plan.clock, engine.exchange, records)
        if state.round < stop_at:   # the engine stopped cleanly at a round boundary
            raise Stopped
        why = divergence([r.loss for r in records], state.round)
        if why is not None:
            state.status, state.message = "diverged", why
            return
        if plan.evaluates_at(state.round):
            row = metrics_row(state, plan, engine.n_clients, engine.evaluate(), parts.clock())
            if plan.clock is not None:
                row.update(timeline.staleness_columns(engine.exchange, state.round - len(state.pending_losses),
                                                      state.round))
            state.pending_losses = []
            parts.record(row)
            state.record_accuracy(row["test_accuracy"])
        n = plan.resize_to(state.round)
        if n is not None:
            parts.log(f"elastic: round {state.round}: {engine.n_clients} -> {n} clients")
            engine.resize(n, state.round)
        if plan.checkpoints_at(state.round, state.last_checkpoint):
            parts.checkpoint()
    state.status = "completed"
    parts.checkpoint()


def add_up(state: RunState, records: Sequence[RoundRecord]) -> None:
    """The rounds the engine finished, into the record: the engine counted their bytes."""
    for rec in records:
        state.bytes_sent += rec.bytes_sent
        state.bytes_cross_node += rec.bytes_cross_node
        state.pending_losses.append(rec.loss)
    state.round += len(records)


def divergence(losses: Sequence[float], at_round: int) -> Optional[str]:
    """Why a chunk with these losses ends the run (None: it does not)."""
    chunk_loss = sum(losses) / len(losses)
    if math.isfinite(chunk_loss) and chunk_loss <= DIVERGENCE_LOSS:
        return None
    return (f"training diverged at round {at_round}: train loss {chunk_loss:.4g} "
            f"(NaN or > {DIVERGENCE_LOSS:g}); try a smaller algorithm.lr")


def metrics_row(state: RunState, plan: RunPlan, n_clients: int, metrics: dict, wall_seconds: float) -> dict:
    """One row of metrics.csv: the rounds so far, the mean loss since the last evaluation, the
    bytes so far, and the engine's evaluation."""
    return {"round": state.round, "epoch": state.round / plan.rounds_per_epoch, "lr": plan.lr(state.round - 1),
            "train_loss": sum(state.pending_losses) / len(state.pending_losses), "bytes_sent": state.bytes_sent,
            "bytes_cross_node": state.bytes_cross_node, "wall_seconds": wall_seconds, "n_clients": n_clients,
            "sim_seconds": state.sim_seconds, **metrics}
