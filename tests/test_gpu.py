"""GPU checks (skipped without CUDA): a block on the GPU steps packed and computes what it
computes on the CPU; deterministic mode makes two GPU runs, and the two engines on a GPU,
agree bit for bit. bench/gpu_check.sh runs this file on a lent GPU machine."""
import pytest
import torch

from qgm_ray import build
from qgm_ray.config import load_config
from qgm_ray.engine.assembly import build_block
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
    assert [r.loss for r in lg] == pytest.approx([r.loss for r in lc], rel=1e-3)
    torch.testing.assert_close(gpu.params.cpu(), cpu.params, rtol=1e-3, atol=1e-3)


def test_ray_equals_local_on_gpu_in_deterministic_mode(ray_session, tmp_path):
    """Where bit-identity holds on a GPU: only with deterministic: true (README)."""
    import csv

    from qgm_ray.runner import run as runner
    rows = {}
    for backend in ("local", "ray"):
        cfg = load_config(None, SMALL + ["device=cuda", "model.name=resnet20", "deterministic=true",
                                         f"backend={backend}"])
        runner.run(cfg, tmp_path / backend, log=lambda m: None)
        with open(tmp_path / backend / "metrics.csv", newline="") as f:
            rows[backend] = [{k: r[k] for k in ("round", "train_loss", "test_accuracy", "consensus_distance")}
                             for r in csv.DictReader(f)]
    assert rows["local"] == rows["ray"]


def test_a_block_too_big_for_its_share_steps_in_measured_chunks():
    """engine/memory.py: the probe's per-client bytes predict the real step, and a block whose
    share of the GPU is too small for one vmap steps in chunks that fit it."""
    from qgm_ray.engine import memory
    cfg = load_config(None, SMALL + ["device=cuda", "model.name=resnet20", "topology.n_clients=32",
                                     "ray.clients_per_actor=32", "data.options={num_samples: 1600, shape: [3, 32, 32]}"])
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    total = torch.cuda.get_device_properties(0).total_memory
    whole = build_block(cfg, ds, parts, list(range(32)), "cuda", gpu_share=1.0)
    assert whole.chunk == 32
    base, per_row = memory.probe(whole.probe_step, memory.cuda_peak_of(torch.device("cuda")))
    actual = memory.cuda_peak_of(torch.device("cuda"))(lambda: whole.probe_step(16))
    print(f"probe: base {base / 2**20:.1f} MiB + {per_row / 2**20:.2f} MiB/client; 16 clients predicted "
          f"{(base + 16 * per_row) / 2**20:.1f} MiB, measured {actual / 2**20:.1f} MiB")
    assert 0.7 * actual <= base + 16 * per_row <= 1.3 * actual
    # a share that holds the block's tensors plus about 8 clients' activations
    share = (memory.resident_bytes(whole.params, whole.state, whole.buffers, whole.x, whole.y)
             + base + 8.5 * per_row) / memory.MEMORY_FRACTION / total
    small = build_block(cfg, ds, parts, list(range(32)), "cuda", gpu_share=share)
    assert 4 <= small.chunk < 32
    small.post_mix(small.pre_mix(0.05), 0.05)
    assert torch.isfinite(small.losses).all()


def test_1024_resnet20_clients_complete_a_round_on_one_gpu():
    """Issue 9's target: 1024 ResNet-20 clients (batch 32) on one 80 GB GPU; one vmap of all
    of them needed 120 GB, so the block steps in chunks (auto)."""
    import time
    cfg = load_config(None, ["data.name=synthetic_image", "data.options={num_samples: 42000, shape: [3, 32, 32]}",
                             "data.partition=iid", "topology.n_clients=1024", "topology.name=ring",
                             "data.batch_size=32", "progress=false", "ray.clients_per_actor=1024",
                             "device=cuda", "model.name=resnet20", "eval.local_models=false"])
    ds = build.build_dataset(cfg)
    engine = LocalEngine(cfg, ds, build.build_partition(cfg, ds), device="cuda")
    block = engine.blocks[0]
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    losses = engine.train(range(2), lambda t: 0.05)
    torch.cuda.synchronize()
    print(f"1024 clients: chunk {block.chunk}, 2 rounds {time.time() - t0:.1f} s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB of "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
    assert len(losses) == 2 and all(r.loss == r.loss for r in losses)


def test_local_models_are_evaluated_vmapped_on_gpu_like_one_by_one():
    import time
    e = _engine("cuda", "model.name=resnet20", "topology.n_clients=16", "ray.clients_per_actor=16")
    _train(e)
    b = e.blocks[0]
    t0 = time.time()
    vmapped = b.evaluate_rows(e.test_x, e.test_y, 1024)
    torch.cuda.synchronize()
    t1 = time.time()
    b.device = torch.device("cpu")   # the one-by-one path (the tensors stay on the GPU)
    try:
        alone = b.evaluate_rows(e.test_x, e.test_y, 1024)
    finally:
        b.device = torch.device("cuda")
    torch.cuda.synchronize()
    print(f"16 local models: vmapped {t1 - t0:.3f} s, one by one {time.time() - t1:.3f} s")
    assert max(abs(a - c) for a, c in zip(vmapped, alone)) <= 2 / len(e.test_y)
