"""Waiting for resources on the driver: new actors (a start, a grow) wait as long as it takes,
logging every WAIT_LOG_EVERY_S; lost actors' replacements wait for a node to join (the
autoscaler's, or an operator's `ray start`), and with none joining for
`fault_tolerance.resource_wait_s` (a fixed cluster that lost a node) every actor starts anew
asking for the share of the cores left that fits, in the same blocks, so the replay's numbers
do not change; null waits for a node however long it takes.

Each function takes `e`, the RayEngine (engine/ray_engine.py): its coordinator, resources and log.
"""
from __future__ import annotations

import time
from typing import Optional

import ray

from qgm_ray.engine.ray_setup import describe_resources, replan_resources
from qgm_ray.layout import MAX_ACTORS_PER_CORE

WAIT_LOG_EVERY_S = 30.0


def wait(e, ref, what: str):
    """ray.get(ref), logging every WAIT_LOG_EVERY_S while new actors (a start, a grow) wait
    for resources, as long as it takes: the run needs them, where lost actors' replacements
    can share cores instead (await_replacements)."""
    t0 = time.time()
    while True:
        ready, _ = ray.wait([ref], timeout=WAIT_LOG_EVERY_S)
        if ready:
            return ray.get(ref)
        e.log(f"ray: waiting {time.time() - t0:.0f}s for resources {what} "
              f"(alive nodes: {sum(1 for x in ray.nodes() if x.get('Alive'))}; available now: "
              f"{describe_resources(ray.available_resources())}); an autoscaler or `ray start` "
              f"on a new node ends the wait")


def await_replacements(e) -> dict:
    """Wait for the replacements of lost actors, logging every WAIT_LOG_EVERY_S. A node that
    joins (an autoscaler's, an operator's `ray start`) ends the wait; with none joining for
    fault_tolerance.resource_wait_s, the actors are re-planned to share the cores left
    (replan), and null waits for a node however long it takes."""
    limit = e.cfg.fault_tolerance.resource_wait_s
    t0 = last_log = time.time()
    deadline = None if limit is None else t0 + limit
    nodes = alive_node_ids()
    told = replanned = False
    while True:
        step = WAIT_LOG_EVERY_S if deadline is None else min(WAIT_LOG_EVERY_S, max(0.0, deadline - time.time()))
        ans = ray.get(e.coordinator.await_replacements.remote(step))
        if not ans["waiting"]:
            return ans
        now, alive = time.time(), alive_node_ids()
        if alive - nodes and deadline is not None:
            deadline = now + limit   # a node joined: its resources may still come
        nodes = alive
        if deadline is not None and now >= deadline:
            why = replan(e, len(ans["slots"]), ans["n_actors"], limit)
            if why is None:
                deadline, replanned = None, True   # they fit: what is left is Ray starting them
                continue
            if not told:
                e.log(f"ray: no node joined in fault_tolerance.resource_wait_s={limit:g}s and {why}: "
                      f"waiting for a node")
                told = True
            deadline = now + WAIT_LOG_EVERY_S   # the cluster may change: look again then
        if now - last_log >= WAIT_LOG_EVERY_S - 0.5:
            last_log = now
            after = ("the actors were re-planned for the cluster as it is; Ray is starting them" if replanned
                     else "fault_tolerance.resource_wait_s: null waits for one" if limit is None else
                     f"after fault_tolerance.resource_wait_s={limit:g}s without one the actors are "
                     f"re-planned to share the cores left")
            e.log(f"ray: waiting {now - t0:.0f}s for resources to replace lost actors (alive nodes: "
                  f"{len(alive)}; available now: {describe_resources(ray.available_resources())}); "
                  f"an autoscaler or `ray start` on a new node ends the wait; {after}")


def replan(e, n_clients: int, n_actors: int, limit: float) -> Optional[str]:
    """Start every actor anew, asking for the share of the cluster as it is now that fits
    (ray_setup.replan_resources); the blocks stay, so the replay's numbers are those of an
    uninterrupted run. None when done, else why it cannot."""
    if ray.util.get_current_placement_group() is not None:
        return "the actors run in a placement group (a Tune trial), whose bundles Ray places"
    nodes = [x.get("Resources", {}) for x in ray.nodes() if x.get("Alive")]
    plan = replan_resources(e.cfg, e.n_max, n_actors, nodes, e.resources)
    k = e.cfg.ray.clients_per_actor
    cpus = sum(x.get("CPU", 0.0) for x in nodes)
    if plan is None:
        r = e.cfg.ray
        fixed = (f"ray.cpus_per_client={r.cpus_per_client:g}" if r.cpus_per_client is not None else
                 f"ray.cpus_per_actor={r.cpus_per_actor:g}" if r.cpus_per_actor != "auto" else None)
        how = (f"{fixed} fixes what each asks for" if fixed else
               f"sharing cores (at most {MAX_ACTORS_PER_CORE} actors a core) does not make them fit")
        return (f"{n_actors} ClientActor(s) of {e.resources['num_cpus']:g} CPU do not fit in "
                f"{len(nodes)} node(s) with {cpus:g} CPU: {how}")
    before = e.resources["num_cpus"]
    ray.get(e.coordinator.replan.remote(plan))
    e.resources = plan
    e.log(f"ray: no node joined in fault_tolerance.resource_wait_s={limit:g}s: re-planned the run's "
          f"{n_actors} ClientActor(s) of up to {k} clients ({n_clients} in all) for the cluster as it is "
          f"now ({len(nodes)} node(s), {cpus:g} CPU): {before:g} -> {plan['num_cpus']:g} CPU per actor, "
          f"the same blocks, so the replay's numbers are unchanged")
    return None


def alive_node_ids() -> set:
    return {x["NodeID"] for x in ray.nodes() if x.get("Alive")}
