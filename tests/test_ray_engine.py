"""The Ray engine against the local engine (the oracle), on a session-scoped local Ray.

Tiny runs (synthetic data, an MLP, 4 clients) so the whole file fits the CI budget on 2 cores;
most of the time is actor start-up (each actor process imports torch).
"""
import math
import os
import signal
import threading

import pytest

from qgm_ray.runner import run as runner
from qgm_ray.config import load_config
from qgm_ray.engine.local import LocalEngine
from qgm_ray.outputs import RunDir
from qgm_ray.runner.checkpoints import CheckpointStore

from helpers import quiet, read_metrics, small_run

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

SMALL = small_run("topology.n_clients=4", "schedule.epochs=2", "eval.every_epochs=0.5", "backend=ray")
# The run the fault-tolerance and resume tests must reproduce exactly.
REFERENCE = ["ray.clients_per_actor=2", "fault_tolerance.checkpoint_every=7", "fault_tolerance.keep=3"]
# Both engines sum the same rows in the same order (engine/base.py: block_mix): on one machine
# their numbers are equal, not close.
TOL = 0.0


def small(*extra):
    return load_config(None, SMALL + list(extra))


def rel(a, b):
    a, b = float(a), float(b)
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def assert_same_rows(a, b, keys=("train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance")):
    assert [r["round"] for r in a] == [r["round"] for r in b]
    worst = 0.0
    for ra, rb in zip(a, b):
        for k in keys:
            e = rel(ra[k], rb[k])
            worst = max(worst, e)
            assert e <= TOL, (ra["round"], k, ra[k], rb[k])
        assert ra["bytes_sent"] == rb["bytes_sent"]
    return worst


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """An uninterrupted Ray run; its metrics are what every recovered run must reproduce."""
    d = tmp_path_factory.mktemp("reference") / "run"
    summary = runner.run(small(*REFERENCE), d, log=quiet)
    return {"dir": d, "summary": summary, "rows": read_metrics(d)}


@pytest.fixture(autouse=True)
def no_leftover_actors(ray_session):
    """Every engine a test starts must be gone when it ends (close() kills the actors, or keeps
    them for the next run: the one crew engine/crew.py holds)."""
    yield
    import time
    deadline = time.time() + 10
    while coordinators() and time.time() < deadline:
        time.sleep(0.2)
    assert coordinators() == []


def coordinators():
    """The coordinators of this session, but the one kept for the next run."""
    from qgm_ray.engine import crew
    kept = crew.kept().name if crew.kept() is not None else None
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "qgm" and a["name"] != kept]


def capture_engine(monkeypatch):
    engines = []
    make = runner.make_engine

    def wrapped(*a, **k):
        engines.append(make(*a, **k))
        return engines[-1]
    monkeypatch.setattr(runner, "make_engine", wrapped)
    return engines


# ------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("extra", [
    ["topology.name=ring", "ray.clients_per_actor=1"],
    ["topology.name=time_varying_random_ring", "ray.clients_per_actor=2", "algorithm.name=gradient_tracking"],
    ["topology.name=ring", "ray.clients_per_actor=2", "compute.pack_clients=true"],
    # push-sum: the weight column travels through the object store like the parameters
    ["topology.name=random_peer", "topology.options={degree: 2}", "ray.clients_per_actor=2",
     "algorithm.name=qg_dsgdm_n"],
], ids=["ring-k1", "time_varying-k2", "ring-k2-packed", "random_peer-push_sum-k2"])
def test_ray_engine_matches_local_engine(ray_session, extra):
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small(*extra)
    ds, parts = runner.prepare(cfg, log=quiet)
    lr = lambda t: 0.05 if t < 6 else 0.02  # noqa: E731 - a schedule change inside a chunk
    results = {}
    for name in ("local", "ray"):
        engine = LocalEngine(cfg, ds, parts) if name == "local" else RayEngine(cfg, ds, parts, log=quiet)
        try:
            seen = []
            records = engine.train(range(0, 5), lr, on_round=lambda rec: seen.append(rec.round))
            evals = [engine.evaluate()]
            records += engine.train(range(5, 12), lr)
            evals.append(engine.evaluate())
            assert seen == list(range(5))
            assert engine.payload_bytes > 0 and engine.n_clients == 4
            results[name] = (records, evals)
        finally:
            engine.close()
    (la, ea), (lb, eb) = results["local"], results["ray"]
    assert len(la) == len(lb) == 12
    assert [r.bytes_sent for r in la] == [r.bytes_sent for r in lb] and la[0].bytes_sent > 0
    worst = max(rel(a.loss, b.loss) for a, b in zip(la, lb))
    for a, b in zip(ea, eb):
        assert set(a) == set(b)
        worst = max([worst] + [rel(a[k], b[k]) for k in a])
    assert worst <= TOL


def _params_after(engine, lr):
    import torch
    losses = engine.train(range(0, 5), lr) + engine.train(range(5, 9), lr)
    evaluation = engine.evaluate()
    return losses, evaluation, torch.stack([c["params"] for c in engine.state_dict()["clients"]])


@pytest.mark.parametrize("extra", [
    ["algorithm.name=centralized_sgdm"],
    ["topology.name=complete"],
    ["topology.name=complete", "algorithm.name=gradient_tracking"],   # (k, 2P) payloads
], ids=["centralized_sgdm", "complete", "complete-gradient_tracking"])
def test_all_reduce_matches_local_engine_bit_for_bit(ray_session, extra):
    """engine/allreduce.py: each actor sends one partial-sum row, the first adds them in block
    order; the local engine adds the same rows in the same order: identical numbers."""
    import torch
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small(*extra, "ray.clients_per_actor=2")
    ds, parts = runner.prepare(cfg, log=quiet)
    lr = lambda t: 0.05 if t < 6 else 0.02  # noqa: E731
    local = LocalEngine(cfg, ds, parts)
    expected = _params_after(local, lr)
    engine = RayEngine(cfg, ds, parts, log=quiet)
    try:
        got = _params_after(engine, lr)
    finally:
        engine.close()
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_all_reduce_resize_matches_local_engine(ray_session, tmp_path):
    """centralized_sgdm through shrinking and growing blocks (2 -> 3 -> 4 clients in blocks of 2):
    identical metrics, and bytes_sent is 2 (n - 1) payloads a round on both engines."""
    extra = ["elastic.schedule=[[0.5, 2], [1.0, 3], [1.5, 4]]", "ray.clients_per_actor=2",
             "algorithm.name=centralized_sgdm"]
    runner.run(small(*extra), tmp_path / "ray", log=quiet)
    runner.run(small(*extra, "backend=local"), tmp_path / "local", log=quiet)
    a, b = read_metrics(tmp_path / "local"), read_metrics(tmp_path / "ray")
    assert [int(r["n_clients"]) for r in b] == [int(r["n_clients"]) for r in a]
    assert {int(r["n_clients"]) for r in a} == {2, 3, 4}
    for ra, rb in zip(a, b):
        for k in ("train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance", "bytes_sent"):
            assert ra[k] == rb[k], (ra["round"], k)


def test_full_run_on_ray_writes_outputs_and_matches_local(reference, tmp_path):
    d = reference["dir"]
    s = reference["summary"]
    assert s["status"] == "completed" and s["backend"] == "ray" and s["n_clients"] == 4
    for name in ("config.yaml", "metrics.csv", "summary.json", "partition.csv"):
        assert (d / name).is_file(), name
    assert CheckpointStore.of(d).list()
    local = runner.run(small(*REFERENCE, "backend=local"), tmp_path / "local", log=quiet)
    assert_same_rows(read_metrics(tmp_path / "local"), reference["rows"])
    assert local["final_test_accuracy"] == pytest.approx(s["final_test_accuracy"], rel=TOL)


# ------------------------------------------------------------------ fault tolerance


def _kill_during_run(monkeypatch, tmp_path, killer, cfg_extra=()):
    """Run the reference config; right after the first evaluation, `killer(engine)` kills an
    actor from another thread while the next chunk of rounds is running."""
    engines = capture_engine(monkeypatch)
    logs = []
    fired = []

    def on_eval(row):
        if not fired:
            fired.append(row["round"])
            threading.Timer(0.02, killer, [engines[0]]).start()

    s = runner.run(small(*REFERENCE, *cfg_extra), tmp_path / "run", on_eval=on_eval, log=logs.append)
    return s, logs, engines[0]


def test_ray_kill_of_an_actor_is_replayed_to_identical_numbers(reference, monkeypatch, tmp_path):
    s, logs, engine = _kill_during_run(monkeypatch, tmp_path, lambda e: ray.kill(e.actor_handles()[1]))
    assert s["status"] == "completed", s["message"]
    assert any("recovered from" in m for m in logs), logs
    assert_same_rows(reference["rows"], read_metrics(tmp_path / "run"))
    assert s["final_test_accuracy"] == reference["summary"]["final_test_accuracy"]
    print(f"\nray.kill recovery: {engine.last_recovery}; run {s['wall_seconds']:.1f}s vs "
          f"uninterrupted {reference['summary']['wall_seconds']:.1f}s")


def test_os_kill_of_an_actor_process_is_recovered(reference, monkeypatch, tmp_path):
    s, logs, engine = _kill_during_run(monkeypatch, tmp_path,
                                       lambda e: os.kill(e.actor_pids()[0], signal.SIGKILL))
    assert s["status"] == "completed", s["message"]
    assert any("recovered from" in m for m in logs), logs
    assert_same_rows(reference["rows"], read_metrics(tmp_path / "run"))
    print(f"\nos.kill recovery: {engine.last_recovery}; run {s['wall_seconds']:.1f}s vs "
          f"uninterrupted {reference['summary']['wall_seconds']:.1f}s")


def test_on_failure_drop_continues_with_fewer_clients(ray_session, monkeypatch, tmp_path):
    s, logs, engine = _kill_during_run(monkeypatch, tmp_path, lambda e: ray.kill(e.actor_handles()[1]),
                                       ["fault_tolerance.on_failure=drop"])
    assert s["status"] == "completed", s["message"]
    rows = read_metrics(tmp_path / "run")
    # actor 1 held clients 2 and 3 (clients_per_actor=2): the ring goes on with 2 clients (from
    # the checkpoint restored, which may precede the first evaluation: then every row has 2)
    assert int(rows[-1]["n_clients"]) == 2 and any("dropped" in m for m in logs)
    assert s["n_clients"] == 2 and engine.last_recovery["lost_slots"] == [2, 3]
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)


def test_failure_while_restoring_is_retried(reference, monkeypatch, tmp_path):
    """A replacement that dies while the checkpoint is restored (on a cluster: it landed on a
    node that was dying too) is one more restart, not a crash."""
    engines = capture_engine(monkeypatch)
    logs = []
    from qgm_ray.engine.ray_engine import RayEngine
    restore = RayEngine.load_state_dict
    calls = []

    def flaky_restore(self, state):
        calls.append(1)
        if len(calls) == 1:
            ray.kill(self.actor_handles()[0])
        return restore(self, state)
    monkeypatch.setattr(RayEngine, "load_state_dict", flaky_restore)

    def on_eval(row):
        if not calls and row["round"] >= 8:
            ray.kill(engines[0].actor_handles()[1])
    s = runner.run(small(*REFERENCE), tmp_path / "run", on_eval=on_eval, log=logs.append)
    assert s["status"] == "completed", s["message"]
    assert len(calls) == 2 and any("restore failed" in m for m in logs), logs
    assert engines[0].recoveries == 2 and s["time_lost_seconds"] > 0
    assert_same_rows(reference["rows"], read_metrics(tmp_path / "run"))


def test_max_restarts_used_up_stops_with_one_line(ray_session, monkeypatch, tmp_path):
    s, logs, _ = _kill_during_run(monkeypatch, tmp_path, lambda e: ray.kill(e.actor_handles()[1]),
                                  ["fault_tolerance.max_restarts=0"])
    msg = s["message"]
    assert s["status"] == "failed" and "\n" not in msg
    ckpt = CheckpointStore.of(tmp_path / "run").list()[-1]
    kept = f"the checkpoint of round {int(ckpt.stem.split('_')[1])} is kept"
    assert "max_restarts=0" in msg and kept in msg and f"--resume {tmp_path / 'run'}" in msg
    assert RunDir(tmp_path / "run").read_summary()["status"] == "failed"


# ------------------------------------------------------------------ elastic, resume


@pytest.mark.parametrize("pack,graph", [("false", "ring"), ("true", "ring"), ("false", "one_peer_exponential")])
def test_elastic_resize_matches_local_engine(ray_session, tmp_path, pack, graph):
    # packed: both engines re-pack the blocks of k after every resize, and stay bit-identical;
    # directed: joiners start with push-sum weight 1 from the weighted average on both engines
    extra = ["elastic.schedule=[[0.5, 2], [1.0, 3], [1.5, 4]]", "ray.clients_per_actor=2", f"compute.pack_clients={pack}",
             f"topology.name={graph}"]
    s = runner.run(small(*extra), tmp_path / "ray", log=quiet)
    runner.run(small(*extra, "backend=local"), tmp_path / "local", log=quiet)
    a, b = read_metrics(tmp_path / "local"), read_metrics(tmp_path / "ray")
    n = [int(r["n_clients"]) for r in b]
    assert n[0] == 4 and 2 in n and 3 in n and n[-1] == 4
    assert n == [int(r["n_clients"]) for r in a]
    assert_same_rows(a, b)
    assert s["n_clients"] == 4


def test_resume_after_driver_stop_reproduces_the_run(reference, tmp_path):
    d = tmp_path / "run"
    cfg = small(*REFERENCE)

    def stop(row):
        if row["round"] >= 2 * int(reference["rows"][0]["round"]):
            raise RuntimeError("simulated driver stop")
    with pytest.raises(RuntimeError, match="simulated driver stop"):
        runner.run(cfg, d, on_eval=stop, log=quiet)
    assert RunDir(d).read_summary()["status"] == "failed"
    # The newest checkpoint was cut short while being copied: resume falls back to the one before.
    rd = RunDir(d)
    newest = CheckpointStore.of(rd.path).list()[-1]
    newest.write_bytes(newest.read_bytes()[:200])
    logs = []
    s = runner.run(cfg, d, resume=True, log=logs.append)
    assert any("unreadable" in m for m in logs)
    assert s["status"] == "completed"
    assert_same_rows(reference["rows"], read_metrics(d))


@pytest.mark.parametrize("extra,rounds", [(["ray.rounds_per_call=1"], 40), (["ray.rounds_per_call=2"], 400)],
                         ids=["per_round", "fused"])
def test_graceful_stop_checkpoints_at_a_round_boundary(ray_session, tmp_path, extra, rounds):
    """should_stop (what Ctrl-C sets) stops the pipelined rounds, or the queued fused calls
    (engine/fused.py: two a actor at most), at a consistent round."""
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small("ray.clients_per_actor=2", "ray.max_inflight_rounds=3", *extra)
    ds, parts = runner.prepare(cfg, log=quiet)
    ray_engine, local = RayEngine(cfg, ds, parts, log=quiet), LocalEngine(cfg, ds, parts)
    try:
        seen = []
        losses = ray_engine.train(range(0, rounds), lambda t: 0.05, on_round=lambda rec: seen.append(rec.round),
                                  should_stop=lambda: len(seen) >= 3)
        assert 3 <= len(losses) < rounds
        local.train(range(0, len(losses)), lambda t: 0.05)
        a, b = local.evaluate(), ray_engine.evaluate()
        assert all(rel(a[k], b[k]) <= TOL for k in a)
    finally:
        ray_engine.close()


def test_coordinator_death_and_run_time_resize(ray_session):
    """A dead Coordinator (its actors die with it) is rebuilt and reported as EngineFailure;
    the named Coordinator's resize works at run time, between chunks."""
    from qgm_ray.engine.base import EngineFailure
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small("ray.clients_per_actor=4", "elastic.max_clients=4")
    ds, parts = runner.prepare(cfg, log=quiet)
    engine, local = RayEngine(cfg, ds, parts, log=quiet), LocalEngine(cfg, ds, parts)
    lr = lambda t: 0.05  # noqa: E731
    try:
        engine.train(range(0, 3), lr)
        local.train(range(0, 3), lr)
        saved = engine.state_dict()
        ray.kill(ray.get_actor(engine.name, namespace="qgm"))
        with pytest.raises(EngineFailure, match="coordinator died"):
            engine.train(range(3, 6), lr)
        engine.load_state_dict(saved)   # what the runner does: restore, replay
        assert engine.train(range(3, 6), lr) == local.train(range(3, 6), lr)
        ray.get(ray.get_actor(engine.name, namespace="qgm").resize.remote(2))   # an operator, at run time
        local.resize(2, 6)
        engine.train(range(6, 8), lr)
        local.train(range(6, 8), lr)
        assert engine.n_clients == 2
        a, b = local.evaluate(), engine.evaluate()
        assert all(rel(a[k], b[k]) <= TOL for k in a)
    finally:
        engine.close()


# ------------------------------------------------------------------ monitoring


def test_metrics_are_exported_to_prometheus(ray_session):
    import time
    import urllib.request

    from qgm_ray.engine.metrics import NAMES
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small("ray.clients_per_actor=4", "name=metrics_test")
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = RayEngine(cfg, ds, parts, log=quiet)
    try:
        engine.train(range(0, 3), lambda t: 0.05)
        engine.evaluate()
        url = f"http://127.0.0.1:{ray_session['metrics_port']}/metrics"
        tag = f'run="{engine.run_tag}"'

        def missing(text):  # this run's series (earlier tests' runs export the same names)
            lines = [ln for ln in text.splitlines() if tag in ln]
            return [n for n in NAMES if not any(ln.startswith(f"ray_{n}") for ln in lines)]
        deadline, text, err = time.time() + 60, "", None
        while time.time() < deadline:
            try:
                text = urllib.request.urlopen(url, timeout=5).read().decode()
                err = None
            except OSError as e:
                err = e
            if not missing(text):
                break
            time.sleep(1)
        if err is not None and not text:
            pytest.skip(f"Ray's metrics agent does not serve {url} here ({err})")
        assert not missing(text), (missing(text), [ln for ln in text.splitlines() if "qgm" in ln][:20])
        per_client = [ln for ln in text.splitlines() if ln.startswith("ray_qgm_train_loss") and tag in ln]
        assert any('client="mean"' in ln for ln in per_client) and any('client="0"' in ln for ln in per_client)
    finally:
        engine.close()


# ------------------------------------------------------------------ bad input


def test_gpu_request_on_a_cluster_without_gpus_is_a_config_error(ray_session):
    from qgm_ray.engine.ray_engine import RayEngine
    from qgm_ray.errors import ConfigError
    cfg = small("ray.gpus_per_client=0.5")
    ds, parts = runner.prepare(cfg, log=quiet)
    before = len(coordinators())
    with pytest.raises(ConfigError, match=r"need 2 GPU .* the Ray cluster has CPU: 2"):
        RayEngine(cfg, ds, parts, log=quiet)
    assert len(coordinators()) == before  # nothing was started


def test_gpus_auto_means_cpu_here(ray_session):
    from qgm_ray.engine.ray_setup import gpus_per_client, plan_resources
    assert plan_resources(small(), 4, True, quiet)["num_gpus"] == 0
    cfg = small("ray.clients_per_actor=2")
    assert gpus_per_client(cfg, 16, 8.0) == 0.5     # 8 actors of 2 on 8 GPUs
    assert gpus_per_client(cfg, 4, 8.0) == 0.5      # never more than one GPU per actor of 2


def test_elastic_n_the_topology_cannot_take_is_refused(ray_session):
    from qgm_ray.errors import ConfigError
    with pytest.raises(ConfigError, match="torus"):
        small("topology.name=torus", "topology.n_clients=9", "elastic.schedule=[[1, 5]]")


def test_resume_of_a_directory_without_checkpoints_is_refused(ray_session, tmp_path):
    from qgm_ray.errors import ConfigError
    with pytest.raises(ConfigError, match="no readable checkpoint"):
        runner.run(small(), tmp_path / "nothing", resume=True, log=quiet)
    assert not (tmp_path / "nothing").exists()


# ------------------------------------------------------------------ evaluation, deterministic mode


def test_evaluations_run_in_one_process_and_deterministic_mode_reaches_the_actors(ray_session):
    """Every evaluation of a run is answered by the same long-lived process, the first
    ClientActor (no fresh worker importing torch per evaluation, no extra torch process);
    `deterministic: true` is applied in every
    ClientActor, with CUBLAS_WORKSPACE_CONFIG in its environment before CUDA could start."""
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small("ray.clients_per_actor=2", "deterministic=true")
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = RayEngine(cfg, ds, parts, log=quiet)
    try:
        for chunk in range(3):
            engine.train(range(2 * chunk, 2 * chunk + 2), lambda t: 0.05)
            assert 0.0 <= engine.evaluate()["test_accuracy"] <= 1.0
        pids = ray.get(engine.coordinator.evaluator_pids.remote())
        assert len(pids) == 3 and len(set(pids)) == 1
        assert pids[0] == engine.actor_pids()[0]
        states = ray.get([a.deterministic.remote() for a in engine.actor_handles()])
        assert states == [(True, ":4096:8")] * 2
    finally:
        engine.close()
