"""CHOCO-Gossip on the Ray engine: the same numbers as the local engine bit for bit (ring,
social graph, resizes, a resume), the compressed wire rows through the object store."""
import numpy as np
import pytest

from qgm_ray.config import load_config
from qgm_ray.engine.local import LocalEngine
from qgm_ray.runner import run as runner

from helpers import read_metrics, small_run

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

SMALL = small_run("topology.n_clients=4", "schedule.epochs=2", "eval.every_epochs=0.5", "backend=ray",
                  "ray.clients_per_actor=2", "compression.op=top_k", "compression.keep=0.1",
                  "compression.consensus_lr=0.5")


def small(*extra):
    return load_config(None, SMALL + list(extra))


def quiet(msg):
    pass


def rows(d):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in read_metrics(d)]


@pytest.mark.parametrize("extra", [
    ["topology.name=ring"],
    ["topology.name=social", "topology.options={graph: florentine_families}", "topology.n_clients=15",
     "ray.clients_per_actor=8",
     "algorithm.name=gradient_tracking", "compression.op=random_k", "compression.unbiased=true"],
], ids=["ring", "social-gradient_tracking-random_k"])
def test_ray_equals_local_bit_for_bit(ray_session, extra):
    """Both engines compress the same rows with the same keys, mix the q's with the same
    block_mix and keep the same x_hat and s: every loss, evaluation and byte count is equal.
    What the Ray actors return for the next round's mixing is the compressor's wire rows."""
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small(*extra)
    ds, parts = runner.prepare(cfg, log=quiet)
    lr = lambda t: 0.05 if t < 4 else 0.02  # noqa: E731 - a schedule change inside a chunk
    out = {}
    for name in ("local", "ray"):
        engine = LocalEngine(cfg, ds, parts) if name == "local" else RayEngine(cfg, ds, parts, log=quiet)
        try:
            records = engine.train(range(0, 3), lr) + engine.train(range(3, 7), lr)
            out[name] = (records, engine.evaluate(), engine.state_dict()["clients"])
            if name == "ray":
                wire = _exported_rows(engine, lr(7))
        finally:
            engine.close()
    (la, ea, sa), (lb, eb, sb) = out["local"], out["ray"]
    assert [(r.loss, r.bytes_sent) for r in la] == [(r.loss, r.bytes_sent) for r in lb]
    assert ea == eb
    for a, b in zip(sa, sb):
        assert all((a["exchange"][k] == b["exchange"][k]).all() for k in ("xhat", "s"))
        assert (a["params"] == b["params"]).all()
    engine = LocalEngine(cfg, ds, parts)
    pb = engine.exchange.payload_bytes_at(7)
    assert wire and all(w.dtype == np.uint8 and w.nbytes == pb for w in wire)
    assert 5 * pb < 4 * engine.exchange.payload_floats   # far fewer bytes than the payload's float32s


def _exported_rows(engine, lr):
    """One more pre-mix by the first actor, through Ray: the object-store values of the rows it
    exports (what the next round's neighbours read)."""
    actor = engine.actor_handles()[0]
    refs = actor.step.options(num_returns=3).remote(None, lr, [], export=[0, 1], t=7)
    return ray.get(refs[:2])


def test_resizes_and_a_resume_match_the_local_engine(ray_session, tmp_path):
    """Every public copy restarts at zero at a resize, on both engines; a stopped run's resume
    reads x_hat and s from its checkpoint: the Ray run's rows are the local engine's."""
    extra = ["elastic.schedule=[[0.5, 3], [1.0, 4]]", "fault_tolerance.checkpoint_every=7",
             "fault_tolerance.keep=10"]
    runner.run(small(*extra, "backend=local"), tmp_path / "local", log=quiet)
    runner.run(small(*extra), tmp_path / "ray", log=quiet)
    a, b = rows(tmp_path / "local"), rows(tmp_path / "ray")
    n = [int(r["n_clients"]) for r in a]
    assert n[0] == 4 and 3 in n and n[-1] == 4 and a == b
    # a resume from the checkpoint at round 7 (before the end) gives the same rows again
    from qgm_ray.outputs import RunDir
    from qgm_ray.runner.checkpoints import CheckpointStore
    from qgm_ray.runner.metrics_file import MetricsFile
    d = tmp_path / "ray"
    store = CheckpointStore.of(RunDir(d).path)
    cut = int(store.list()[0].stem.split("_")[1])
    for p in store.list():
        if int(p.stem.split("_")[1]) > cut:
            p.unlink()
    MetricsFile.of(d).truncate_after(cut)
    (d / "summary.json").unlink()
    assert runner.run(small(*extra), d, resume=True, log=quiet)["status"] == "completed"
    assert rows(d) == a
