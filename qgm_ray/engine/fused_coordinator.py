"""The Coordinator's side of fused rounds (engine/fused.py; the actors' side is
engine/fused_actor.py): whether a chunk fuses, every actor's outbox opened and closed around
the chunk, and the calls of many whole rounds each driven and turned into the rounds' records.

Each function takes `c`, the Coordinator: its actors, the chunk's calls in flight
(`c.inflight`), its stop request and whether its actors hold outboxes (`c.mailboxes_open`).
"""
from __future__ import annotations

import time
from typing import Optional

import ray

from qgm_ray.engine import fused, mailbox
from qgm_ray.engine.exchange import Exchange
from qgm_ray.engine.round_flow import round_record


def fusable(c, ex: Exchange) -> bool:
    return fused.fusable(c.cfg.ray.rounds_per_call, ex, c.topology, c.compressed, c.nodes)


def open_mailboxes(c, ex: Exchange, t0: int) -> Optional[str]:
    """Every actor's outbox for fused rounds from t0; where the node's shared memory has no
    room for one, why (and none is kept: the chunk runs a call per round)."""
    prefix = mailbox.new_prefix()
    c.mailboxes_open = True   # from the first call on: an actor lost meanwhile leaves its peers' to close
    why = [w for w in ray.get([a.open_mailbox.remote(prefix, b, plan, t0)
                               for b, (a, plan) in enumerate(zip(c.actors, fused.plans(ex, t0)))]) if w]
    if why:
        close_mailboxes(c)
        return why[0]
    # An actor lost after it made its outbox fails its own call and makes its peers' attach
    # raise PeerLost: read past those, so the lost actor is what surfaces (and is recovered).
    call_results([a.attach_mailbox.remote() for a in c.actors])
    call_results([a.unlink_mailbox.remote() for a in c.actors])
    return None

def close_mailboxes(c) -> None:
    """Close the chunk's outboxes in every live actor: their memory and descriptors go back,
    and the names a peer lost before its first round left are removed with them."""
    if not c.mailboxes_open:
        return
    c.mailboxes_open = False
    refs = [a.close_mailbox.remote() for a in c.actors]
    # A dead actor's call fails at once (its names go with its peers' close); one that does
    # not answer in time is not waited for.
    ray.wait(refs, num_returns=len(refs), timeout=10)


def run(c, t0: int, lrs: list[float], ex: Exchange):
    """Rounds t0.. as calls of many whole rounds each, the actors swapping payload rows
    through their node's shared memory. Two calls per actor are queued at most, so a stop
    request waits for two calls; every call ends with its rounds finished."""
    size, inflight = fused.RoundsPerCall(c.cfg.ray.rounds_per_call), c.inflight
    submitted, last_time = 0, time.time()
    while True:
        while submitted < len(lrs) and len(inflight) < 2 and not c.stop_requested:
            r = min(size.size, len(lrs) - submitted)
            inflight.append((t0 + submitted, [a.rounds.remote(t0 + submitted, lrs[submitted:submitted + r])
                                              for a in c.actors]))
            submitted += r
        if not inflight:
            break
        t, refs = inflight[0]
        per_actor = call_results(refs)
        inflight.popleft()
        now, rounds = time.time(), len(per_actor[0])
        size.observe(rounds, now - last_time)
        for i in range(rounds):   # the call's time, spread evenly over its rounds
            yield round_record(c, t + i, [x for losses in per_actor for x in losses[i]], ex,
                               (now - last_time) / rounds)
        last_time = now
    # The outboxes live as long as the chunk (run_rounds closes them, whatever ended it).
    yield {"done": submitted}


def call_results(refs: list) -> list:
    """Each actor's losses of one fused call. A call that stopped because a peer failed
    (PeerLost) is read past, so the peer's own error (a lost actor, or the exception a
    rule raised) is the one that surfaces."""
    out, lost = [], None
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except mailbox.PeerLost as e:
            lost = lost or e
    if lost is not None:
        raise lost
    return out
