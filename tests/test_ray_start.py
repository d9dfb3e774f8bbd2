"""The Ray engine's start: the driver creates the first ClientActors beside the coordinator
(coordinator.first_actors), the coordinator adopts them, and every later actor is the
coordinator's. Ownership is what differs, so the tests read it from Ray's actor table."""
import os
import time

import pytest

from qgm_ray.config import load_config
from qgm_ray.engine.base import EngineFailure
from qgm_ray.engine.local import LocalEngine
from qgm_ray.runner import run as runner

from helpers import quiet, small_run

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

CFG = small_run("topology.n_clients=4", "backend=ray", "ray.clients_per_actor=2", "ray.reuse_actors=false")


def owner_and_self(handle) -> tuple:
    """(the process that created this actor, its own process), as Ray's actor table names them."""
    from ray._private import state
    entry = state.actors(actor_id=handle._actor_id.hex())
    return tuple((entry[k]["NodeID"], entry[k]["Port"]) for k in ("OwnerAddress", "Address"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_the_drivers_actors_serve_a_replacement_is_the_coordinators_and_they_die_with_it(ray_session):
    from qgm_ray.engine.ray_engine import NAMESPACE, RayEngine
    cfg = load_config(None, CFG)
    ds, parts = runner.prepare(cfg, log=quiet)
    engine, local = RayEngine(cfg, ds, parts, log=quiet), LocalEngine(cfg, ds, parts)
    lr = lambda t: 0.05  # noqa: E731
    try:
        driver, coordinator = owner_and_self(ray.get_actor(engine.name, namespace=NAMESPACE))
        handles = engine.actor_handles()
        assert len(handles) == 2 and [owner_and_self(a)[0] for a in handles] == [driver, driver]
        saved = engine.state_dict()
        assert engine.train(range(0, 2), lr) == local.train(range(0, 2), lr)   # the adopted actors train

        ray.kill(handles[1])
        del handles   # a handle held here would keep the driver's actor alive past the coordinator
        with pytest.raises(EngineFailure, match=r"ClientActor\(s\) \[1\] died"):
            engine.train(range(2, 4), lr)
        first, replacement = engine.actor_handles()
        assert owner_and_self(first)[0] == driver and owner_and_self(replacement)[0] == coordinator
        del first, replacement
        engine.load_state_dict(saved)   # the runner's restore and replay
        replay = engine.train(range(0, 4), lr)
        local.load_state_dict(saved)
        assert replay == local.train(range(0, 4), lr)

        # The coordinator holds the last handle of the driver's actor: it dies with it, as the
        # replacement (the coordinator's own) does.
        pids = engine.actor_pids()
        ray.kill(ray.get_actor(engine.name, namespace=NAMESPACE))
        deadline = time.time() + 60
        while any(alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in pids)
    finally:
        engine.close()
