"""A finished run's Coordinator and its ClientActors, kept for the next Ray run of this driver.

Each actor is a process that imports torch and the package before its first call: seconds of
CPU per actor, more than a short run's training on a small machine. With
`ray.reuse_actors: true` a run that ends cleanly leaves its coordinator (which owns the
ClientActors: they live as long as it does) here instead of killing it; the next RayEngine of
this process whose actors would ask Ray for the same things takes it, and every actor starts
the new run anew (`reconfigure`: the state of a newly created one). The numbers do not depend
on which process computes them, so a run on a kept crew equals one on new actors bit for bit.

One crew is kept at a time: a kept crew holds its actors' CPUs, so a run that cannot use it
must not wait behind it (`take` releases a crew of another kind). `release()` kills it; a
driver that exits or shuts Ray down takes it with it (the actors are the driver's).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import ray


@dataclass(frozen=True)
class Crew:
    key: str           # what the actors asked Ray for (crew_key)
    coordinator: Any   # the Coordinator's handle
    name: str          # its name in the qgm namespace (named at its creation; Ray cannot rename)


_kept: Optional[Crew] = None


def crew_key(resources: dict, clients_per_actor: int, runtime_env: Optional[dict], deterministic: bool,
             home: Optional[str]) -> str:
    """Equal for two runs whose actors Ray would schedule alike (resources per ClientActor,
    block size, runtime_env: plug-in code and environment, the node the coordinator must run on,
    the placement group) and whose processes need the same settings: deterministic kernels, once
    a process turns them on, stay on. A crew of another Ray session answers nobody (`take`)."""
    group = ray.util.get_current_placement_group()
    return json.dumps({"resources": resources, "k": clients_per_actor, "env": runtime_env,
                       "deterministic": deterministic, "home": home,
                       "group": group.id.hex() if group is not None else None}, sort_keys=True, default=str)


def take(key: str) -> Optional[Crew]:
    """The kept crew if it matches `key` (it is no longer kept), else None (a kept crew of
    another kind is released: its actors' resources go back to Ray)."""
    global _kept
    crew, _kept = _kept, None
    if crew is None:
        return None
    if crew.key == key and _alive(crew):
        return crew
    stop(crew.coordinator)
    return None


def keep(crew: Crew) -> None:
    """Keep `crew` for the next run, releasing any crew kept before."""
    global _kept
    if _kept is not None and _kept is not crew:
        stop(_kept.coordinator)
    _kept = crew


def kept() -> Optional[Crew]:
    return _kept


def release() -> None:
    """Kill the kept crew, if any (its actors' resources go back to Ray)."""
    global _kept
    crew, _kept = _kept, None
    if crew is not None:
        stop(crew.coordinator)


def _alive(crew: Crew) -> bool:
    if not ray.is_initialized():
        return False
    try:
        ray.get(crew.coordinator.info.remote(), timeout=10)
        return True
    except Exception:  # noqa: BLE001 - dead, or another session's: start anew
        return False


def stop(coordinator) -> None:
    """Shut a coordinator down (it kills its ClientActors), then kill it."""
    if not ray.is_initialized():
        return
    try:
        ray.get(coordinator.shutdown.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - dead already, or stuck: kill below
        pass
    try:
        ray.kill(coordinator)
    except Exception:  # noqa: BLE001
        pass
