"""A failed ClientActor or Coordinator, on the driver. A ClientActor that dies (process
killed, node lost) makes the coordinator's chunk end with a "failed" record; the engine then
has the coordinator replace the dead actors (`fault_tolerance.on_failure: replay`) or remove
them with their clients (`drop`, which rebuilds the topology for the clients left and refuses
an n it cannot take) and raises EngineFailure. The runner restores the last checkpoint into the
engine and replays from there, so a replayed run's numbers are those of an uninterrupted one.
A dead Coordinator (its actors share its fate) is rebuilt the same way.

A lost node is a set of dead actors: the replacements go to the nodes left, or wait for one
(engine/resource_wait.py). Every failure, also one while restoring (a replacement on a node
that was dying too) or while replacing, is an EngineFailure: whether to retry is the runner's
decision (`fault_tolerance.max_restarts`), and the engine retries nothing by itself. The time
lost to failures is counted from the first time the run reached its furthest round to the
time the replay reached it again.

Each function takes `e`, the RayEngine (engine/ray_engine.py): its coordinator, what it knows of
the run's clients and its record of failures.
"""
from __future__ import annotations

import time

import ray

from qgm_ray import errors
from qgm_ray.engine.base import EngineFailure
from qgm_ray.engine.actor_repair import FAILURES
from qgm_ray.engine.resource_wait import await_replacements
from qgm_ray.errors import ConfigError


def progress(e, done: int) -> None:
    """`done` rounds done: a replay back at the furthest round adds the time it lost."""
    now = time.time()
    if e._behind is not None and done >= e._behind[0]:
        lost = now - e._behind[1]
        e.time_lost_seconds += lost
        e.log(f"ray: back at round {e._behind[0]} {lost:.1f}s later than before the failure "
              f"(recovery and replay; {e.time_lost_seconds:.1f}s lost to failures in all)")
        e._behind = None
    if done > e._frontier[0]:
        e._frontier = (done, now)


def on_failure(e, err: Exception) -> None:
    # Is it the coordinator (its actors die with it) or one of its actors? "Unavailable"
    # is what Ray says while it does not know yet: ask again, for 30 s at most. Either way
    # this ends in EngineFailure (recover, RayEngine._restart); retrying is the runner's decision.
    deadline = time.time() + 30
    while True:
        try:
            ray.get(e.coordinator.info.remote(), timeout=max(1.0, deadline - time.time()))
            break
        except ray.exceptions.ActorUnavailableError:
            if time.time() > deadline:
                e._restart(f"the coordinator did not answer for 30s ({type(err).__name__})")
            time.sleep(1.0)
        except (*FAILURES, ray.exceptions.GetTimeoutError):
            e._restart(f"the coordinator died ({type(err).__name__})")
    recover(e, errors.described(err))


def recover(e, reason: str) -> None:
    policy = e.cfg.fault_tolerance.on_failure
    t0 = time.time()
    if e._behind is None:
        e._behind = e._frontier
    try:
        info = ray.get(e.coordinator.repair.remote(policy))
        if info["pending"]:
            info = {**info, **await_replacements(e)}
    except FAILURES:   # the coordinator died while repairing: rebuild everything
        e._restart(f"the coordinator died while replacing actors ({reason})")
    lost = info["lost_slots"]
    if policy == "drop":
        e.dropped.update(lost)
        left = len(info["slots"])
        try:
            from qgm_ray.topology import validate_topology
            if left == 0:
                raise ConfigError("no client is left")
            validate_topology(e.cfg.topology.name, left, **e.cfg.topology.options)
        except ConfigError as e:
            raise ConfigError(f"fault_tolerance.on_failure=drop: clients {lost} died and the "
                              f"{left} left cannot form the topology: {e}") from None
    e.recoveries += 1
    e.last_recovery = {"reason": reason, "lost_slots": lost, "dead_actors": info["dead_actors"],
                       "repair_seconds": time.time() - t0}
    e._apply({**e._info, "actor_nodes": info["actor_nodes"], "slots": info["slots"],
              "n_actors": len(info["actor_nodes"])})
    action = "replaced" if policy == "replay" else "dropped"
    unreplaced = info.get("unreplaced")
    if unreplaced:   # the runner's restore repairs again, within fault_tolerance.max_restarts
        action += f", but the replacement(s) of actor(s) {unreplaced} died before they started"
    else:
        e._log_placement()
    raise EngineFailure(f"ClientActor(s) {info['dead_actors']} died ({reason}); clients {lost} {action}",
                        lost)
