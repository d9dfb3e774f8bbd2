"""GPU checks (skipped without CUDA): a block on the GPU steps packed and computes what it
computes on the CPU; deterministic mode makes two GPU runs, and the two engines on a GPU,
agree bit for bit. bench/gpu_check.sh runs this file on a lent GPU machine."""
import pytest
import torch

from qgm_ray import build
from qgm_ray.config import load_config
from qgm_ray.engine.local import LocalEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

SMALL = ["data.name=synthetic_image", "data.options={num_samples: 400, shape: [3, 16, 16]}",
         "topology.n_clients=8", "topology.name=ring", "data.batch_size=16", "progress=false", "data.alpha=1.0",
         "ray.clients_per_actor=8", "schedule.epochs=1", "eval.every_epochs=0.5"]


def _engine(device, *extra):
    cfg = load_config(None, SMALL + [f"device={device}", *extra])
    ds = build.build_dataset(cfg)
    return LocalEngine(cfg, ds, build.build_partition(cfg, ds), device=device)


def _train(engine, rounds=4):
    return engine.train(range(rounds), lambda t: 0.05)


# First: deterministic mode must be applied before this process's first cuBLAS call.
def test_deterministic_mode_gives_identical_gpu_runs():
    a = _engine("cuda", "model.name=resnet20", "deterministic=true")
    la, pa = _train(a), a.params.cpu()
    b = _engine("cuda", "model.name=resnet20", "deterministic=true")
    lb, pb = _train(b), b.params.cpu()
    assert la == lb and torch.equal(pa, pb)


@pytest.mark.parametrize("model", ["resnet20", "resnet_evonorm20"])
def test_block_on_gpu_is_packed_and_matches_cpu(model):
    gpu, cpu = _engine("cuda", f"model.name={model}"), _engine("cpu", f"model.name={model}")
    assert all(b.packed for b in gpu.blocks) and gpu.blocks[0].params.is_cuda
    lg, lc = _train(gpu), _train(cpu)
    assert lg == pytest.approx(lc, rel=1e-3)
    torch.testing.assert_close(gpu.params.cpu(), cpu.params, rtol=1e-3, atol=1e-3)


def test_ray_equals_local_on_gpu_in_deterministic_mode(ray_session, tmp_path):
    """Where bit-identity holds on a GPU: only with deterministic: true (README)."""
    import csv

    from qgm_ray import runner
    rows = {}
    for backend in ("local", "ray"):
        cfg = load_config(None, SMALL + ["device=cuda", "model.name=resnet20", "deterministic=true",
                                         f"backend={backend}"])
        runner.run(cfg, tmp_path / backend, log=lambda m: None)
        with open(tmp_path / backend / "metrics.csv", newline="") as f:
            rows[backend] = [{k: r[k] for k in ("round", "train_loss", "test_accuracy", "consensus_distance")}
                             for r in csv.DictReader(f)]
    assert rows["local"] == rows["ray"]
