"""The run's simulated time (qgm_ray/clock/), advanced by the rounds the engine finished.

The runner advances it, in the driver, from each chunk's RoundRecords and the engine's exchange
stage (`Engine.exchange`: the graph W(t), the bytes of every message, the all-reduce, the round
barriers), so both engines give the same clock by construction. The start times live in the
run's state record (`RunState.sim_start`), so a checkpoint, --resume and a replay after a lost
actor go on with the same clock. An asynchronous run's clock is its schedule's
(qgm_ray/async_schedule.py): a row ends when its last step does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from qgm_ray import clock
from qgm_ray.clock import ClockModel
from qgm_ray.engine.base import RoundRecord
from qgm_ray.engine.wire import FLOAT32
from qgm_ray.runner.plan import RunState


def advance(state: RunState, model: ClockModel, exchange, records: Sequence[RoundRecord]) -> None:
    """The clock over these finished rounds, with the engine's exchange as it is now (membership
    changes only between chunks)."""
    if not records:
        return
    if exchange.schedule is not None:   # asynchronous: the schedule holds every step's end
        state.sim_seconds = exchange.schedule.end_seconds(records[-1].round)
        return
    n = exchange.n
    start = clock.resized(state.sim_start, n)
    for rec in records:
        start = one_round(start, model, exchange, rec.round)
    state.sim_start = start.tolist()
    state.sim_seconds = float(np.max(start)) if n else state.sim_seconds


def staleness_columns(exchange, first: int, end: int) -> dict:
    """metrics.csv's staleness of an asynchronous gossip run over rows first..end-1: the mean and
    the largest own step - version mixed, over every neighbour each step mixed (none for
    synchronous rounds, where it is 0, nor for AD-PSGD, which reads its peer's model as it is)."""
    schedule = exchange.schedule
    if schedule is None or schedule.version is None:
        return {}
    mean, worst = schedule.staleness(first, end)
    return {"staleness_mean": mean, "staleness_max": worst}


def one_round(start: np.ndarray, model: ClockModel, exchange, t: int) -> np.ndarray:
    """start(t+1) from start(t): round t's gossip (or all-reduce) and the barriers that end it."""
    n = exchange.n
    compute = model.compute_seconds(t, n)
    if exchange.all_reduce:
        start = clock.barrier_round(start, compute, model.allreduce_seconds(n, exchange.payload_bytes_at(t)))
    else:
        src, dst, nbytes = exchange.edges(t)
        start = clock.gossip_round(start, compute, src, dst, model.link_seconds(nbytes))
    # SlowMo's exact average: one more all-reduce behind a barrier, of float32 values whatever
    # the gossip's wire (as Exchange.round_bytes counts it).
    for _ in exchange.due(t):
        start = clock.barrier_round(start, np.zeros(n), model.allreduce_seconds(n, FLOAT32.nbytes(exchange.payload_floats)))
    return start
