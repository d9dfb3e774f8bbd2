"""The Ray engine's start: the driver creates the first ClientActors beside the coordinator
(actor_start.first_actors), the coordinator adopts them, and every later actor is the
coordinator's. Who created an actor shows in its fate: an actor dies with the process that
created it, and otherwise when the last handle to it goes."""
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


def gone(pid: int, within: float = 60.0) -> bool:
    """Whether process `pid` ends within `within` seconds."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_the_drivers_actors_train_a_replacement_is_the_coordinators_and_both_end_with_it(ray_session):
    from qgm_ray.engine.ray_engine import NAMESPACE, RayEngine
    cfg = load_config(None, CFG)
    ds, parts = runner.prepare(cfg, log=quiet)
    engine, local = RayEngine(cfg, ds, parts, log=quiet), LocalEngine(cfg, ds, parts)
    lr = lambda t: 0.05  # noqa: E731
    try:
        saved = engine.state_dict()
        assert engine.train(range(0, 2), lr) == local.train(range(0, 2), lr)
        ray.kill(engine.actor_handles()[1])
        with pytest.raises(EngineFailure, match=r"ClientActor\(s\) \[1\] died"):
            engine.train(range(2, 4), lr)
        engine.load_state_dict(saved)   # the runner's restore and replay
        local.load_state_dict(saved)
        assert engine.train(range(0, 4), lr) == local.train(range(0, 4), lr)

        first, replacement = engine.actor_handles()
        replacement_pid = ray.get(replacement.pid.remote())
        ray.kill(ray.get_actor(engine.name, namespace=NAMESPACE))
        # The replacement is the coordinator's: it ends with it. The start's actor is the
        # driver's: it answers while this handle is held, and ends once it is dropped (the
        # coordinator held the only other one).
        assert gone(replacement_pid)
        first_pid = ray.get(first.pid.remote())
        del first, replacement
        assert gone(first_pid)
    finally:
        engine.close()
