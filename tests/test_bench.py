"""The benchmark harness (no timing asserts), the gloo peer's math, and a ClientActor's block."""
import json

import numpy as np
import pytest
import torch

from bench import harness
from bench.gloo_peer import GlooPeer
from qgm_ray import build
from qgm_ray.config import from_dict
from qgm_ray.engine.local import LocalEngine


def _local(cfg_dict, rounds, lr):
    cfg = from_dict(cfg_dict)
    ds = build.build_dataset(cfg)
    engine = LocalEngine(cfg, ds, build.build_partition(cfg, ds))
    losses = [r.loss for r in engine.train(range(rounds), lambda t: lr)]
    return engine, losses


@pytest.mark.slow
@pytest.mark.long
def test_bench_writes_valid_records(tmp_path):
    """`python main.py bench` on the smoke plan: every backend and layout of the quick plan
    (local, Ray one client per actor, Ray packed, gloo) on cnn1d, fewer rounds and n = 4 only
    (the quick plan took 3-4 minutes of CI; the other model's configs: the test below). The records validate against the
    schema, the table and the plot are written. No timing asserts."""
    out = tmp_path / "bench.json"
    assert harness.main(output=str(out), mode="smoke") == 0
    records = json.loads(out.read_text())
    assert harness.validate_records(records) == []
    plan = harness.PLANS["smoke"]
    quick = harness.PLANS["quick"]
    assert set(plan.models) <= set(quick.models) and {s.label for s in harness.backend_specs("cnn1d", 4, plan)} == {
        s.label for s in harness.backend_specs("cnn1d", 4, quick)}
    expected = {(m, n, s.label) for m in plan.models for n in plan.ns for s in harness.backend_specs(m, n, plan)}
    assert {(r["model"], r["n_clients"], r["label"]) for r in records} == expected
    for r in records:
        assert r["status"] == "ok", r
        assert r["round_seconds_median"] > 0 and r["peak_rss_mb"] > 0 and r["rounds_measured"] > 0
        assert r["ratio_to_local"] is not None
        assert r["ratio_to_gloo"] is not None and (r["backend"] != "gloo" or r["ratio_to_gloo"] == 1.0)
    assert any(r["label"].endswith("packed") for r in records)
    table = (tmp_path / "bench.md").read_text()
    assert sum(table.count(f"| {m} | {n} |") for m in plan.models for n in plan.ns) == len(records)
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_every_models_bench_config_is_valid_on_every_backend():
    """The smoke run trains cnn1d only; every other model of the harness builds a valid config
    for each backend and layout of the quick plan (what `bench --quick` would run)."""
    from qgm_ray.config import from_dict
    for model in harness.MODELS:
        for spec in harness.backend_specs(model, 4, harness.PLANS["quick"]):
            cfg = from_dict(harness.config_dict(model, 4, spec.backend, spec.clients_per_actor, list(spec.extra)))
            assert cfg.model.name == model and cfg.topology.n_clients == 4


def test_record_schema_rejects_bad_records():
    good = {"backend": "local", "n_clients": 4, "clients_per_actor": 4, "model": "cnn1d",
            "round_seconds_median": 0.01, "peak_rss_mb": 800.0, "status": "ok"}
    assert harness.validate_records([good]) == []
    assert harness.validate_records([]) != []
    assert any("missing peak_rss_mb" in e for e in harness.validate_records([{k: v for k, v in good.items()
                                                                            if k != "peak_rss_mb"}]))
    assert harness.validate_records([{**good, "backend": "mpi"}]) != []
    assert harness.validate_records([{**good, "n_clients": "4"}]) != []
    assert harness.validate_records([{**good, "round_seconds_median": None}]) != []


def test_memory_groups_keep_local_everywhere():
    specs = harness.backend_specs("cnn1d", 32, harness.PLANS["full"])
    gs = harness.groups(32, specs, budget_mb=40 * harness.MB_PER_PROCESS)
    assert len(gs) > 1 and all(g[0].backend == "local" for g in gs)
    assert all(any(s.backend == "local" and s.n_threads() == 1 for s in g) for g in gs)
    others = [s for g in gs for s in g if s.backend != "local"]
    assert sorted(s.label for s in others) == sorted(s.label for s in specs if s.backend != "local")
    assert len(harness.groups(4, harness.backend_specs("cnn1d", 4, harness.PLANS["full"]), budget_mb=1e9)) == 1


@pytest.mark.parametrize("algorithm", ["qg_dsgdm_n", "gradient_tracking"])
def test_gloo_peer_computes_what_the_local_engine_computes(algorithm):
    d = harness.config_dict("cnn1d", 4, "local", extra=[f"algorithm.name={algorithm}"])
    rounds, lr = 3, 0.05
    peer = GlooPeer(d, timeout=120)
    try:
        _, ends, gloo_losses = peer.train(0, [lr] * rounds)
        gloo = np.stack(peer.params())
    finally:
        peer.close()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: then even the convolutions' sums run in the same order
    try:
        engine, losses = _local(d, rounds, lr)
    finally:
        torch.set_num_threads(threads)
    local = engine.params.numpy()
    assert len(ends) == rounds and ends == sorted(ends)
    np.testing.assert_allclose(gloo_losses, losses, rtol=1e-5)
    np.testing.assert_allclose(gloo, local, rtol=1e-5, atol=1e-6)
    # Same mixing function, same summation order, one thread each: bit for bit.
    np.testing.assert_array_equal(gloo, local)


def _actor(k: int, pack, model="cnn1d"):
    """A ClientActor (the plain class, no Ray) holding clients 0..k-1 of an n=k ring."""
    from qgm_ray.engine.actors import ClientActor, dataset_meta

    cfg = from_dict(harness.config_dict(model, k, "ray", k, [f"compute.pack_clients={pack}"]))
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    actor = ClientActor(cfg, dataset_meta(ds), parts, 0, ds.train_x.numpy(), ds.train_y.numpy(),
                        ds.test_x.numpy(), ds.test_y.numpy())
    actor.set_clients(list(range(k)), list(range(k)))
    return actor


def _actor_rounds(actor, rounds: int, lr: float = 0.05):
    """Drive `actor.step` like the coordinator does for a ring held entirely by this actor."""
    k = actor.block.k
    w = np.asarray(build.build_topology(actor.cfg, k).matrix(0))
    rows = [([j for j in range(k) if w[i, j] != 0], [float(w[i, j]) for j in range(k) if w[i, j] != 0])
            for i in range(k)]
    out = actor.step(None, lr, [])
    for _ in range(rounds):
        out = actor.step((lr, rows), lr, [])
    return out[:-1], out[-1]


@pytest.mark.parametrize("k,pack,packed", [(8, "auto", True), (2, "auto", False), (8, "false", False),
                                           (2, "true", True)])
def test_actor_packs_its_clients_as_configured(k, pack, packed):
    torch.set_num_threads(1)
    assert _actor(k, pack).block.packed == packed


def test_packed_actor_matches_unpacked_actor_and_survives_a_membership_change():
    torch.set_num_threads(1)
    a, b = _actor(8, "false"), _actor(8, "true")
    pa, ra = _actor_rounds(a, 3)
    pb, rb = _actor_rounds(b, 3)
    assert b.block.packed and not a.block.packed and len(pb) == 8
    for x, y in zip(pa, pb):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rb["losses"], ra["losses"], rtol=1e-5)
    # Restoring checkpoints into a packed actor writes through to the packed rows, and a
    # membership change re-packs exactly the clients it now holds.
    b.load_state_dicts(a.state_dicts())
    np.testing.assert_array_equal(b.params()[0], a.params()[0])
    b.set_clients(list(range(4)), list(range(4)))
    assert b.block.packed and b.block.k == 4
    np.testing.assert_array_equal(b.params()[0], a.params()[0][:4])
    b.set_clients(list(range(8)), list(range(8)))   # clients 4-7 are built afresh
    assert b.block.packed and b.block.k == 8
    b.load_state_dicts(a.state_dicts())
    np.testing.assert_array_equal(b.block.params.numpy(), a.params()[0])
    pa, _ = _actor_rounds(a, 1)
    pb, _ = _actor_rounds(b, 1)
    for x, y in zip(pa, pb):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-5)


def test_gpu_bench_without_cuda_exits_2_with_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, "main.py", "bench", "--device", "cuda", "--quick"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [x for x in (p.stdout + p.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and "no CUDA device" in lines[0]


def test_gpu_bench_code_paths_run_on_cpu_with_tiny_sizes():
    """The GPU bench's measurements (local block, ceiling) on CPU with 8x8 images: the code the
    next GPU session runs is exercised here; the Ray column is covered by the engine tests."""
    from bench import gpu
    torch.set_num_threads(1)
    recs = gpu.run("cpu", ns=(2,), models=("resnet_evonorm20",), warmup=2, rounds=2, ray=False,
                   image=(3, 8, 8), log=lambda s: None)
    assert [r["configuration"] for r in recs] == ["ceiling", "local block"]
    assert recs[0]["throughput_vs_ceiling"] == 1.0
    assert all(r["round_seconds"] > 0 for r in recs)
    assert "| resnet_evonorm20 | 2 | local block |" in gpu.markdown(recs, {"mode": "test"})
