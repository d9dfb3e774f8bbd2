"""Lost ClientActors found and repaired, inside the Coordinator (engine/coordinator.py): the
actors that do not answer, replaced (replay: the same clients, their state restored later by
the Coordinator's load_states) or removed with their clients (drop), the replacements awaited,
and every actor started anew when the cluster as it is cannot hold the replacements.

Each function takes `c`, the Coordinator (and runs under its lock): its actors, their nodes and
slots, and the replacements not yet answered (`c._pending`, `c._unreplaced`).
"""
from __future__ import annotations

import ray
from ray.exceptions import (ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError,
                            RayActorError, WorkerCrashedError)

from qgm_ray.engine.base import groups_of

# What "a process or node died" looks like to the caller of ray.get.
FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError,
            WorkerCrashedError)


def find_dead(c, timeout: float = 10.0) -> list[int]:
    """Indices of ClientActors that do not answer (dead process or node)."""
    pings = [a.ping.remote() for a in c.actors]
    dead = []
    for i, p in enumerate(pings):
        try:
            ray.get(p, timeout=timeout)
        except FAILURES:
            dead.append(i)
        except ray.exceptions.GetTimeoutError:
            dead.append(i)
    return dead


def repair(c, policy: str) -> dict:
    """After a failure: replace dead actors (replay: same clients, state restored later by
    load_states) or remove them with their clients (drop). Returns the lost slots at once;
    "pending" lists the replacements that have not answered yet (await_replacements).

    Replacements go to the nodes left (placement, away from the nodes where actors just
    died: such a node may be dying and not yet known dead). Whether to try again when one
    dies is not decided here: the engine reports it and the runner's restore repairs again."""
    dead = find_dead(c)
    groups = groups_of(len(c.slots), c.k)
    lost = [c.slots[i] for a in dead for i in groups[a]]
    suspect = {c.nodes[a] for a in dead if a < len(c.nodes)}
    for a in dead:
        try:
            ray.kill(c.actors[a])
        except Exception:  # noqa: BLE001 - already gone
            pass
    # Replacements not yet answered (actor index -> ref of its node id), and those that
    # died before answering; set here because every await or replan follows a repair.
    c._pending, c._unreplaced = {}, []
    if policy == "drop":
        c.actors = [a for i, a in enumerate(c.actors) if i not in dead]
        c.nodes = [m for i, m in enumerate(c.nodes) if i not in dead]
        slots = [s for s in c.slots if s not in lost]   # held from the restore (load_states) on
    else:
        slots = list(c.slots)
        live = {i: m for i, m in enumerate(c.nodes) if i not in dead}
        targets = c._targets(len(c.slots), live, exclude=suspect)
        for a in dead:
            c.actors[a] = c._new_actor(targets.get(a))
            c._pending[a] = c.actors[a].node_id.remote()
    return {**c.info(), "slots": slots, "dead_actors": dead, "lost_slots": lost,
            "pending": sorted(c._pending)}


def await_replacements(c, timeout: float) -> dict:
    """Wait up to `timeout` seconds for the pending replacements (repair, replan) to start.
    Returns info() with "waiting" (actor indices still waiting for resources) and
    "unreplaced" (those whose replacement died before it answered)."""
    refs = list(c._pending.values())
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout) if refs else ([], [])
    for a, ref in list(c._pending.items()):
        if ref not in ready:
            continue
        del c._pending[a]
        try:
            c.nodes[a] = ray.get(ref)
        except FAILURES:
            c._unreplaced.append(a)
    return {**c.info(), "waiting": sorted(c._pending), "unreplaced": sorted(c._unreplaced)}


def replan(c, resources: dict) -> list[int]:
    """The cluster as it is cannot hold the replacements: start every actor anew asking for
    `resources` (per actor; the same blocks), placed for them. The restore that follows
    (load_states) loads every client. Returns the actors to await."""
    c.resources = dict(resources)
    for a in c.actors:
        try:
            ray.kill(a)
        except Exception:  # noqa: BLE001 - already gone
            pass
    targets = c._targets(len(c.slots), {})
    c.actors = [c._new_actor(targets.get(i)) for i in range(len(c.actors))]
    c._pending = {i: a.node_id.remote() for i, a in enumerate(c.actors)}
    c._unreplaced = []
    return sorted(c._pending)
