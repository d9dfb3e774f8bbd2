"""The Coordinator's side of an asynchronous run on Ray (engine/async_ray.py: the waves'
plan and calls; the actors step them): each metrics row's waves submitted, at most
ray.max_inflight_rounds rows in flight, and each row's losses turned into its record.

Each function takes `c`, the Coordinator: its actors, slots, the chunk's calls in flight
(`c.inflight`, `c.finals`) and its stop request.
"""
from __future__ import annotations

import functools
import time
from typing import Optional

import numpy as np
import ray

from qgm_ray.engine.async_ray import WavePlan, Waves
from qgm_ray.engine.exchange import Exchange
from qgm_ray.engine.round_flow import round_record


def run(c, t0: int, lrs: list[float], ex: Exchange):
    """Metrics rows t0.. of an asynchronous run: each row's waves, one `async_wave` call per
    actor with events in the wave or in the one before (engine/async_ray.py). Rows stream as
    rounds do, at most ray.max_inflight_rounds in flight; the chunk ends with post-only calls."""
    plan = WavePlan(ex.schedule, ex.groups, ex.W(0))
    depth, inflight = c.cfg.ray.max_inflight_rounds, c.inflight
    waves = Waves(plan, len(c.actors), functools.partial(wave_call, c))
    # Each actor's copies of its in-neighbours' rings, from their owners (a restore's too).
    c.finals.extend(waves.begin(functools.partial(history, c), lambda b, rings: c.actors[b].async_begin.remote(*rings)))
    last_time, done = time.time(), 0
    for idx, lr in enumerate(lrs):
        if c.stop_requested:
            break
        while len(inflight) >= depth:
            rec = collect_row(c, inflight.popleft(), ex, last_time)
            last_time = time.time()
            yield rec
        inflight.append((t0 + idx, waves.row(t0 + idx, lr)))
        done += 1
    c.finals.extend(waves.finish())
    while inflight:
        rec = collect_row(c, inflight.popleft(), ex, last_time)
        last_time = time.time()
        yield rec
    ray.get(c.finals)
    yield {"done": done}


def history(c, b: int, positions: list) -> list:
    refs = c.actors[b].async_history.options(num_returns=len(positions)).remote(positions)
    return refs if len(positions) > 1 else [refs]


def wave_call(c, b: int, deliver: list, post, pre: Optional[dict], k: int) -> list:
    """Actor b's `async_wave` (async_ray.Waves): its refs, k exported rows and the record."""
    msg, refs = post if post is not None else (None, [])
    out = c.actors[b].async_wave.options(num_returns=k + 1).remote(
        [(row, slot) for _, row, slot in deliver], msg, pre, *[ref for ref, _, _ in deliver], *refs)
    return out if k else [out]


def collect_row(c, item, ex: Exchange, since: float) -> dict:
    """An asynchronous row's record: its events' losses, in event order, as AsyncRun reads them."""
    t, refs = item
    n = ex.schedule.n
    losses = np.empty(n)
    for rec in ray.get(refs):
        losses[np.asarray(rec["events"], dtype=np.int64) - t * n] = rec["losses"]
    clients = ex.schedule.client[t * n:(t + 1) * n]
    return round_record(c, t, losses.tolist(), ex, time.time() - since, [c.slots[client] for client in clients.tolist()])
