"""Prometheus metrics (engine/metrics.py): each round counted once, one `run` tag for the whole
run (also across a Coordinator restart), live resizes logged."""
import pytest

from helpers import quiet, small_run

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from qgm_ray.runner import run as runner  # noqa: E402
from qgm_ray.config import load_config  # noqa: E402
from qgm_ray.engine.base import EngineFailure  # noqa: E402

SMALL = small_run("backend=ray", "topology.n_clients=4", "ray.clients_per_actor=2", "eval.local_models=false",
                  "name=metrics")


def test_a_replayed_round_is_counted_once(ray_session):
    from qgm_ray.engine.metrics import RunMetrics
    m = RunMetrics("unit-test")
    for t in range(10):
        m.on_round(t, [1.0], [0], 0.01, 100)
    for t in range(5, 12):   # restored the checkpoint of round 5, replayed 5..9, then on
        m.on_round(t, [1.0], [0], 0.01, 100)
    assert m.bytes_counted == 12 * 100 and m.counted_rounds == 12
    restarted = RunMetrics("unit-test", counted_rounds=12)   # a new Coordinator after a restart
    for t in range(8, 14):
        restarted.on_round(t, [1.0], [0], 0.01, 100)
    assert restarted.bytes_counted == 2 * 100


def test_a_coordinator_restart_keeps_the_run_tag_and_does_not_recount(ray_session):
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = load_config(None, SMALL)
    ds, parts = runner.prepare(cfg, log=quiet)
    logs = []
    engine = RayEngine(cfg, ds, parts, log=logs.append)
    try:
        state = engine.state_dict()
        engine.train(range(0, 5), lambda t: 0.05)
        first = ray.get(engine.coordinator.info.remote())["metrics"]
        assert first["run"] == engine.run_tag and first["counted_rounds"] == 5 and first["bytes_counted"] > 0
        name_before = engine.name
        ray.kill(engine.coordinator)
        with pytest.raises(EngineFailure):
            engine.train(range(5, 8), lambda t: 0.05)
        assert engine.name != name_before   # a new actor name (the old one may linger in Ray's GCS)...
        engine.load_state_dict(state)        # ...restore round 0 and replay 0..6
        engine.train(range(0, 7), lambda t: 0.05)
        after = ray.get(engine.coordinator.info.remote())["metrics"]
        assert after["run"] == first["run"] == name_before   # ...but the same metrics tag
        assert after["counted_rounds"] == 7
        per_round = first["bytes_counted"] // 5
        assert after["bytes_counted"] == 2 * per_round   # only rounds 5 and 6 are new
    finally:
        engine.close()


def test_a_live_resize_is_logged(ray_session):
    from qgm_ray.engine.ray_engine import NAMESPACE, RayEngine
    cfg = load_config(None, SMALL + ["topology.name=complete"])
    ds, parts = runner.prepare(cfg, log=quiet)
    logs = []
    engine = RayEngine(cfg, ds, parts, log=logs.append)
    try:
        engine.train(range(0, 2), lambda t: 0.05)
        # what an operator does from another process
        ray.get(ray.get_actor(engine.name, namespace=NAMESPACE).resize.remote(2))
        engine.train(range(2, 4), lambda t: 0.05)
        assert engine.n_clients == 2
        assert any("live resize" in m and "4 -> 2 clients" in m and "round 2" in m for m in logs), logs
    finally:
        engine.close()
