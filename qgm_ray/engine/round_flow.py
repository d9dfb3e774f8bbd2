"""The Coordinator's side of the round-per-call dataflow (engine/coordinator.py drives it;
the actors' side is engine/round_calls.py). Round t, for the ClientActor holding positions G
(k clients):

    refs = actor.step(post=(lr[t-1], rows of W(t-1) for G), pre_lr=lr[t], sources,
                      *payload_refs[t-1][j] for j in sources)     # -> exported payload refs + a record

`sources` are the in-neighbours of G held by other actors. The refs are top-level arguments,
so Ray hands the actor the resolved arrays (zero-copy from the node's object store, or pulled
from another node) and starts the call as soon as those payloads exist: there is no global
barrier, an actor runs ahead as far as its neighbours allow. The coordinator never fetches a
payload; it keeps only the refs of the last round (older ones are dropped once the calls that
read them are submitted, and Ray frees them when those calls finish) and waits for the small
records of round t - max_inflight_rounds before submitting round t, which bounds how many
rounds of payloads can sit in the object store. A chunk of rounds ends with a post-mix-only
call, so between chunks every client has finished its round (evaluation, checkpoints,
resizes and replacements happen only there).

Each function takes `c`, the Coordinator: its actors, the chunk's calls in flight
(`c.inflight`, `c.finals`), its stop request and its metrics.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import ray

from qgm_ray.engine.exchange import Exchange


def run(c, t0: int, lrs: list[float], ex: Exchange):
    """Rounds t0 .. t0+len(lrs)-1, a call per actor per round. Yields a record per finished
    round, in order, then {"done": rounds}."""
    depth = c.cfg.ray.max_inflight_rounds
    inflight = c.inflight
    # What the next round's post-mix reads: position -> payload ref (gossip) or the ref of
    # the mean (all-reduce); None before the first round.
    prev = None
    last_time = time.time()
    t = t0
    submitted = 0
    for idx, lr in enumerate(lrs):
        if c.stop_requested:
            break
        t = t0 + idx
        while len(inflight) >= depth:
            rec = collect(c, inflight[0], ex, last_time)
            inflight.popleft()
            last_time = time.time()
            yield rec
        post_lr = lrs[idx - 1] if prev is not None else None
        if post_lr is not None and ex.due(t - 1):
            # Round t - 1 ends with barriers (engine/barriers.py): post-only calls, the
            # barriers, then this round's calls only pre-mix.
            _, finals = calls(c, ex, t, post_lr, None, prev)
            c.finals.extend(finals)
            barriers(c, ex, t - 1, post_lr)
            post_lr = None
        prev, records = calls(c, ex, t, post_lr, lr, prev)   # the old refs are dropped here
        inflight.append((t, records))
        submitted += 1
    if prev is not None:  # finish the last round: post-mix only
        _, finals = calls(c, ex, t0 + submitted, lrs[submitted - 1], None, prev)
        c.finals.extend(finals)
        barriers(c, ex, t0 + submitted - 1, lrs[submitted - 1])
        prev = None
        while inflight:
            rec = collect(c, inflight[0], ex, last_time)
            inflight.popleft()
            last_time = time.time()
            yield rec
        ray.get(c.finals)
    yield {"done": submitted}


def calls(c, ex: Exchange, t: int, post_lr: Optional[float], pre_lr: Optional[float], prev):
    """One call per actor: finish round t - 1 (post-mix with `post_lr`, reading `prev`; None:
    nothing to finish) and start round t (pre-mix with `pre_lr`; None: post-mix only).
    Returns (what round t + 1's post-mix reads, the calls' record refs)."""
    if ex.all_reduce:
        # engine/allreduce.py: each actor returns one partial-sum row; the first actor adds
        # them in block order; every actor's next call reads the mean's ref.
        if pre_lr is None:
            return None, [a.step_mean.remote(post_lr, None, prev) for a in c.actors]
        partials, records = [], []
        for actor in c.actors:
            partial, record = actor.step_mean.options(num_returns=2).remote(post_lr, pre_lr, prev)
            partials.append(partial)
            records.append(record)
        return c.actors[0].mean_of.remote(ex.n, *partials), records
    payloads, records = {}, []
    for b, actor in enumerate(c.actors):
        if post_lr is not None:
            rows, sources = ex.wiring(t - 1, b)
            post, args = (post_lr, rows), [prev[j] for j in sources]
        else:
            post, sources, args = None, [], []
        # A compressed exchange decodes with the senders' keys: (seed, slot, round).
        keyed = {"t": t, "source_slots": [c.slots[j] for j in sources]} if c.compressed else {}
        if pre_lr is None:
            records.append(actor.step.remote(post, None, sources, *args, **keyed))
            continue
        # Only the rows another actor mixes next round go to the object store.
        sent = ex.exports(t, b)
        refs = actor.step.options(num_returns=len(sent) + 1).remote(post, pre_lr, sources, *args, export=sent,
                                                                    **keyed)
        refs = refs if sent else [refs]
        payloads.update(zip(sent, refs[:-1]))
        records.append(refs[-1])
    return (payloads if pre_lr is not None else None), records


def barriers(c, ex: Exchange, t: int, lr: float) -> None:
    """The barriers that end round t (engine/barriers.py): every actor gathers, the first
    actor reduces in block order, every actor applies. Refs only: each actor runs these
    after the calls submitted before, and the gathered refs are dropped here, so Ray frees
    them once reduced. The small results join `finals` (waited for at the chunk's end,
    drained after a failure)."""
    for i, barrier in enumerate(ex.barriers):
        if not barrier.due(t):
            continue
        parts = [a.barrier_gather.remote(i) for a in c.actors]
        reduced = c.actors[0].barrier_reduce.remote(i, *parts)
        c.finals.extend(a.barrier_apply.remote(i, lr, reduced) for a in c.actors)


def collect(c, item, ex: Exchange, since: float) -> dict:
    t, refs = item
    losses = [x for r in ray.get(refs) for x in r["losses"]]   # position order, as LocalEngine
    return round_record(c, t, losses, ex, time.time() - since)


def round_record(c, t: int, losses: list[float], ex: Exchange, seconds: float, slots: Optional[list] = None) -> dict:
    """Round t's record and metrics from its losses (of `slots`, default position order)."""
    record = ex.record(t, float(np.mean(losses)), c.nodes)
    c.metrics.on_round(t, losses, c.slots if slots is None else slots, seconds, record.bytes_sent,
                       record.bytes_cross_node)
    return {"round": t, "loss": record.loss, "seconds": seconds, "bytes_sent": record.bytes_sent,
            "bytes_cross_node": record.bytes_cross_node}
