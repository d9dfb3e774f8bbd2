"""8-bit image datasets stored as uint8 and normalised per batch (data.pixel_table / to_float):
bit for bit what the float32 storage they replace gave, in loading, training (a block's
gradients and a whole local run, with crop + flip), evaluation, and through Ray's object store."""
import dataclasses

import numpy as np
import pytest
import torch

from qgm_ray import build
from qgm_ray.config import load_config
from qgm_ray.data import apply_augment, draw_augment, load_dataset, pixel_table, to_float, vision
from qgm_ray.engine.actors import dataset_from_arrays, dataset_meta
from qgm_ray.engine.assembly import build_block
from qgm_ray.engine.local import LocalEngine
from qgm_ray.flat_model import evaluate_model
from test_data import _write_fake_cifar10, _write_fake_imagenet32

CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
IMAGENET32 = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
NORMS = {name: (spec["mean"], spec["std"]) for name, spec in vision._TORCHVISION.items()} | {"imagenet32": IMAGENET32}


def old_float_path(x: torch.Tensor, norm) -> torch.Tensor:
    """The load-time conversion every 8-bit dataset used before uint8 storage (data.py at
    a870408, _to_tensors and _load_imagenet32), kept verbatim as the reference."""
    mean, std = norm
    x = x.float().div_(255.0)
    return x.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1)).contiguous()


def every_value(channels: int) -> torch.Tensor:
    """(1, C, 1, 256) uint8: each 8-bit value in each channel."""
    return torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, channels, 1, 256).contiguous()


# ------------------------------------------------------------------ the conversion


@pytest.mark.parametrize("name", sorted(NORMS))
def test_table_equals_the_float_path_for_every_pixel_value(name):
    norm = NORMS[name]
    x = every_value(len(norm[0]))
    assert torch.equal(to_float(x, pixel_table(norm)), old_float_path(x, norm))
    # and on a batch in another layout (the NHWC -> NCHW permute of CIFAR): elementwise, so equal
    nhwc = torch.randint(0, 256, (5, 7, 9, len(norm[0])), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    nchw = nhwc.permute(0, 3, 1, 2)
    assert torch.equal(to_float(nchw.contiguous(), pixel_table(norm)), old_float_path(nchw, norm))


def test_why_a_table_and_not_arithmetic_on_the_device():
    """CUDA divides by a CPU scalar as a multiply by the reciprocal: emulated here, it rounds
    x / 255 differently for 126 of the 256 values, so the table is built on the CPU."""
    v = torch.arange(256, dtype=torch.float32)
    inv = torch.tensor(1.0) / torch.tensor(255.0)
    assert int((v * inv != v / 255.0).sum()) == 126
    via_reciprocal = ((every_value(3).float() * inv) - torch.tensor(CIFAR10[0]).view(1, 3, 1, 1)) \
        / torch.tensor(CIFAR10[1]).view(1, 3, 1, 1)
    assert not torch.equal(via_reciprocal, to_float(every_value(3), pixel_table(CIFAR10)))


def test_to_float_passes_float_data_and_refuses_wrong_pixels():
    x = torch.randn(4, 3, 8, 8)
    assert to_float(x, None) is x
    ids = torch.arange(12).view(3, 4)   # text: token ids
    assert to_float(ids, None) is ids
    with pytest.raises(ValueError, match="uint8"):
        to_float(x, pixel_table(CIFAR10))
    with pytest.raises(ValueError, match="uint8"):
        to_float(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), pixel_table(CIFAR10))   # 1 channel, 3 in the table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_table_on_the_gpu_equals_the_cpu_float_path():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = to_float(x.cuda(), pixel_table(CIFAR10).cuda())
    assert out.device.type == "cuda" and torch.equal(out.cpu(), old_float_path(x, CIFAR10))


# ------------------------------------------------------------------ loading


def _cifar10(tmp_path, monkeypatch, n_per_batch=4, n_test=6):
    import torchvision.datasets.cifar as tv_cifar

    _write_fake_cifar10(tmp_path, n_per_batch=n_per_batch, n_test=n_test)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)   # not the real files


def test_8bit_datasets_load_as_uint8_a_quarter_of_float32(tmp_path, monkeypatch):
    _cifar10(tmp_path, monkeypatch)
    _write_fake_imagenet32(tmp_path / "imagenet32")
    for name, norm in [("cifar10", CIFAR10), ("imagenet32", IMAGENET32)]:
        ds = load_dataset(name, root=str(tmp_path))
        assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8 and ds.norm == norm
        assert ds.train_x.is_contiguous() and ds.train_x.nbytes == len(ds.train_x) * 3 * 32 * 32
        table = pixel_table(ds.norm)
        assert torch.equal(to_float(ds.train_x, table), old_float_path(ds.train_x, norm))
        assert old_float_path(ds.train_x, norm).nbytes == 4 * ds.train_x.nbytes
    for name in ("synthetic", "synthetic_image", "digits"):   # not 8-bit: float32 as before
        ds = load_dataset(name)
        assert ds.norm is None and ds.train_x.dtype == torch.float32


def test_augmentation_after_normalising_is_unchanged():
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    params = draw_augment(16, torch.Generator().manual_seed(3), "crop_flip")
    for fill in (0.0, tuple(-m / s for m, s in zip(*CIFAR10))):   # what blocks pad with; Dataset.fill
        new = apply_augment(to_float(x, pixel_table(CIFAR10)), params, "crop_flip", fill=fill)
        assert torch.equal(new, apply_augment(old_float_path(x, CIFAR10), params, "crop_flip", fill=fill))


# ------------------------------------------------------------------ training and evaluation


def _config(tmp_path, *extra):
    return load_config(None, ["data.name=cifar10", f"data.root={tmp_path}", "model.name=cnn",
                              "topology.n_clients=4", "topology.name=ring", "data.batch_size=8",
                              "data.partition=iid", "eval.batch_size=16", "progress=false",
                              "algorithm.name=qg_dsgdm_n", *extra])


def _twins(cfg):
    """The dataset as loaded (uint8) and as it was stored before (float32, normalised)."""
    u8 = build.build_dataset(cfg)
    f32 = dataclasses.replace(u8, train_x=old_float_path(u8.train_x, u8.norm),
                              test_x=old_float_path(u8.test_x, u8.norm), norm=None)
    return u8, f32


def test_block_gradients_on_uint8_equal_float32_storage(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    _cifar10(tmp_path, monkeypatch, n_per_batch=24, n_test=30)
    cfg = _config(tmp_path)
    u8, f32 = _twins(cfg)
    parts = build.build_partition(cfg, u8)
    for packed in (False, True):
        cfg_k = _config(tmp_path, f"compute.pack_clients={str(packed).lower()}")
        a = build_block(cfg_k, u8, parts, [0, 1, 2], "cpu")
        b = build_block(cfg_k, f32, parts, [0, 1, 2], "cpu")
        assert a.packed == b.packed == packed and a.augment == "crop_flip"
        assert a.x.dtype == torch.uint8 and b.x.dtype == torch.float32 and a.x.nbytes * 4 == b.x.nbytes
        for _ in range(3):   # crops and flips drawn from each client's stream, as before
            xa, ya = a._batches()
            xb, yb = b._batches()
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        for _ in range(2):
            ga, gb = a.gradients().clone(), b.gradients().clone()
            assert torch.equal(ga, gb) and torch.equal(a.losses, b.losses)
        if packed:
            a.chunk = b.chunk = 2   # engine/memory.py's chunked step, and its probe, on uint8 rows
            ga, gb = a.gradients().clone(), b.gradients().clone()
            assert torch.equal(ga, gb) and torch.equal(a.losses, b.losses)
            a.probe_step(2)


@pytest.mark.parametrize("k,pack", [(1, "false"), (4, "true")])
def test_local_run_and_evaluation_on_uint8_equal_float32_storage(tmp_path, monkeypatch, k, pack):
    torch.set_num_threads(1)
    _cifar10(tmp_path, monkeypatch, n_per_batch=24, n_test=30)
    cfg = _config(tmp_path, f"ray.clients_per_actor={k}", f"compute.pack_clients={pack}")
    u8, f32 = _twins(cfg)
    parts = build.build_partition(cfg, u8)
    runs = []
    for ds in (u8, f32):
        engine = LocalEngine(cfg, ds, parts)
        losses = engine.train(range(4), lambda t: 0.05)
        runs.append((losses, engine.params.clone(), engine.flat_buffers().clone(), engine.evaluate()))
    (la, pa, ba, ea), (lb, pb, bb, eb) = runs
    assert la == lb and torch.equal(pa, pb) and torch.equal(ba, bb)
    assert ea == eb and not np.isnan(ea["local_test_accuracy"])


def test_evaluation_normalises_one_batch_at_a_time(monkeypatch):
    import qgm_ray.flat_model as flat_model

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 5, (37,), generator=g)
    rows = []

    def spy(xb, table):
        rows.append(len(xb))
        return to_float(xb, table)
    monkeypatch.setattr(flat_model, "to_float", spy)
    got = evaluate_model(model, x, y, 10, pixel_table(CIFAR10))
    assert rows == [10, 10, 10, 7]   # never the whole test set as float32
    assert got == evaluate_model(model, old_float_path(x, CIFAR10), y, 10)


# ------------------------------------------------------------------ the object store


def test_actor_dataset_carries_uint8_and_norm(tmp_path):
    _write_fake_imagenet32(tmp_path / "imagenet32")
    ds = load_dataset("imagenet32", root=str(tmp_path))
    arrays = [np.ascontiguousarray(t.numpy()) for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)]
    assert arrays[0].dtype == np.uint8   # what RayEngine puts
    again = dataset_from_arrays(dataset_meta(ds), *arrays)
    assert again.norm == ds.norm and again.fill == ds.fill and again.augment == ds.augment
    assert torch.equal(again.train_x, ds.train_x) and again.train_x.dtype == torch.uint8


@pytest.mark.ray
def test_ray_engine_on_uint8_matches_local(ray_session, tmp_path, monkeypatch):
    import ray

    from qgm_ray.engine.ray_engine import RayEngine

    _cifar10(tmp_path, monkeypatch, n_per_batch=24, n_test=30)
    cfg = _config(tmp_path, "backend=ray", "ray.clients_per_actor=2")
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    results = {}
    for name in ("local", "ray"):
        engine = LocalEngine(cfg, ds, parts) if name == "local" else RayEngine(cfg, ds, parts, log=lambda m: None)
        try:
            if name == "ray":
                stored = ray.get(engine.data_refs[0])
                assert stored.dtype == np.uint8 and stored.nbytes == ds.train_x.nbytes
                assert engine.meta["norm"] == CIFAR10
            losses = engine.train(range(4), lambda t: 0.05)
            results[name] = (losses, engine.evaluate())
        finally:
            engine.close()
    (la, ea), (lb, eb) = results["local"], results["ray"]
    assert [r.loss for r in la] == pytest.approx([r.loss for r in lb], rel=1e-5)
    assert set(ea) == set(eb) and all(ea[k] == pytest.approx(eb[k], rel=1e-5) for k in ea)
