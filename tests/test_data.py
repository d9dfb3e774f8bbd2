import os
import pickle
import random

import numpy as np
import pytest
import torch

from qgm_ray.data import DATASETS, augment_batch, describe, load_dataset, pixel_table, to_float, vision
from qgm_ray.errors import ConfigError


def _check(ds, n_train, n_test, shape, num_classes):
    assert ds.train_x.shape == (n_train, *shape) and ds.test_x.shape == (n_test, *shape)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.float32 and ds.norm is None  # not 8-bit: float as before
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64
    assert ds.train_y.shape == (n_train,) and ds.test_y.shape == (n_test,)
    assert ds.input_shape == shape and ds.num_classes == num_classes
    assert set(ds.train_y.unique().tolist()) == set(range(num_classes))
    assert int(ds.test_y.max()) < num_classes and int(ds.test_y.min()) >= 0
    assert ds.name in describe(ds) and str(n_train) in describe(ds)


def _same(a, b):
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("train_x", "train_y", "test_x", "test_y"))


# ----------------------------------------------------------------------------- mnist1d


@pytest.fixture
def count_make_dataset(monkeypatch):
    import mnist1d.data

    calls = []
    real = mnist1d.data.make_dataset

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(mnist1d.data, "make_dataset", counting)
    return calls


def test_mnist1d_defaults_cache_and_rng(tmp_path, count_make_dataset):
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    ds = load_dataset("mnist1d", root=str(tmp_path), seed=42)
    # make_dataset reseeds the global RNGs; the loader must restore them.
    assert np.array_equal(np.random.get_state()[1], np_before) and random.getstate() == py_before
    _check(ds, 4000, 1000, (1, 40), 10)
    assert ds.augment is None
    assert abs(float(ds.train_x.mean())) < 1e-4 and abs(float(ds.train_x.std()) - 1) < 1e-3
    cached = list((tmp_path / "mnist1d").glob("*.npz"))
    assert len(cached) == 1 and count_make_dataset == [1]

    again = load_dataset("mnist1d", root=str(tmp_path), seed=42)
    assert count_make_dataset == [1], "second load must come from the .npz cache"
    assert _same(ds, again)


def test_mnist1d_seed_and_size(tmp_path, count_make_dataset):
    a = load_dataset("mnist1d", root=str(tmp_path), seed=0, num_samples=500)
    b = load_dataset("mnist1d", root=str(tmp_path), seed=1, num_samples=500)
    _check(a, 400, 100, (1, 40), 10)
    assert not torch.equal(a.train_x, b.train_x)
    assert count_make_dataset == [1, 1]
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 2
    assert _same(a, load_dataset("mnist1d", root=str(tmp_path), seed=0, num_samples=500))
    assert count_make_dataset == [1, 1]


# ----------------------------------------------------------------------------- other offline


def test_digits():
    ds = load_dataset("digits", seed=0)
    _check(ds, 1437, 360, (1, 8, 8), 10)
    assert abs(float(ds.train_x.mean())) < 1e-4 and abs(float(ds.train_x.std()) - 1) < 1e-3
    # stratified: every class keeps its share in the test split
    counts = torch.bincount(ds.test_y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37
    assert _same(ds, load_dataset("digits", seed=0))
    assert not _same(ds, load_dataset("digits", seed=1))


def test_synthetic():
    ds = load_dataset("synthetic", seed=3)
    _check(ds, 1600, 400, (20,), 4)
    assert torch.bincount(ds.train_y).tolist() != [] and ds.augment is None
    assert _same(ds, load_dataset("synthetic", seed=3))
    assert not _same(ds, load_dataset("synthetic", seed=4))
    small = load_dataset("synthetic", num_samples=100, num_features=5, num_classes=3, separation=1.0)
    _check(small, 80, 20, (5,), 3)
    # the classes are separable: nearest class mean gets most test points right
    means = torch.stack([ds.train_x[ds.train_y == c].mean(0) for c in range(4)])
    pred = torch.cdist(ds.test_x, means).argmin(1)
    assert (pred == ds.test_y).float().mean() > 0.8


def test_synthetic_image():
    ds = load_dataset("synthetic_image", seed=0, num_samples=200)
    _check(ds, 160, 40, (3, 32, 32), 10)
    assert ds.augment == "crop_flip"
    assert _same(ds, load_dataset("synthetic_image", seed=0, num_samples=200))
    small = load_dataset("synthetic_image", num_samples=50, shape=[1, 8, 8], num_classes=5)
    _check(small, 40, 10, (1, 8, 8), 5)
    assert small.augment is None
    assert load_dataset("synthetic_image", num_samples=50, augment=None).augment is None


def test_unknown_name_and_option():
    with pytest.raises(ConfigError) as e:
        load_dataset("imagenet")
    assert all(n in str(e.value) for n in DATASETS)
    with pytest.raises(ConfigError, match="bogus"):
        load_dataset("synthetic", bogus=1)
    with pytest.raises(ConfigError, match="augment"):
        load_dataset("synthetic", augment="rotate")


# ----------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"])
def test_missing_torchvision_files(tmp_path, name):
    with pytest.raises(ConfigError) as e:
        load_dataset(name, root=str(tmp_path / "nowhere"), download=False)
    msg = str(e.value)
    assert "\n" not in msg and name in msg
    assert str(tmp_path / "nowhere") in msg and os.path.isabs(str(tmp_path))
    assert "--set data.download=true" in msg and "copy" in msg


def _write_fake_cifar10(root, n_per_batch=4, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    raw = {}
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        arr = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        raw[name] = (arr, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": arr, "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f)
    return raw


def test_fake_cifar10_conversion(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    raw = _write_fake_cifar10(tmp_path)
    # Real files are md5-checked; ours are not the real ones.
    with pytest.raises(ConfigError, match="corrupted"):
        load_dataset("cifar10", root=str(tmp_path))
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    ds = load_dataset("cifar10", root=str(tmp_path))

    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (6, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10 and ds.augment == "crop_flip"
    assert ds.norm == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    mean = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
    std = torch.tensor((0.2023, 0.1994, 0.2010)).view(3, 1, 1)
    # the pickled rows are channel planes (R, G, B) of 32x32, row-major, kept as uint8
    train_raw = np.concatenate([raw[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(ds.train_x, torch.from_numpy(train_raw).view(-1, 3, 32, 32))
    assert torch.equal(ds.test_x, torch.from_numpy(raw["test_batch"][0]).view(-1, 3, 32, 32))
    expect = (torch.from_numpy(train_raw).float().view(-1, 3, 32, 32) / 255 - mean) / std
    assert torch.allclose(to_float(ds.train_x, pixel_table(ds.norm)), expect, atol=1e-5)
    assert ds.train_y.tolist() == sum((raw[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert ds.test_y.tolist() == raw["test_batch"][1]
    # a black pixel after normalisation is what the crop pads with
    assert torch.allclose(torch.tensor(ds.fill), (-mean / std).flatten())


def test_to_tensors_layouts():
    class Fake:
        pass

    mnist_like = Fake()
    mnist_like.data = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    mnist_like.targets = torch.tensor([3, 4])
    x, y = vision._to_tensors(mnist_like, vision._TORCHVISION["mnist"])
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.uint8 and y.tolist() == [3, 4]
    x = to_float(x, pixel_table(((0.1307,), (0.3081,))))
    assert torch.allclose(x, torch.full_like(x, (1 - 0.1307) / 0.3081))

    svhn_like = Fake()
    svhn_like.data = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    svhn_like.labels = np.array([0, 9])
    x, y = vision._to_tensors(svhn_like, vision._TORCHVISION["svhn"])
    assert x.shape == (2, 3, 32, 32) and y.dtype == torch.int64 and torch.all(x == 0)
    assert torch.all(to_float(x, pixel_table(((0.5,) * 3, (0.5,) * 3))) == -1)


# ----------------------------------------------------------------------------- augmentation


def _find_crop(padded, out):
    """(dy, dx, flipped) of a crop of `padded` that equals `out`, or None."""
    h, w = out.shape[-2:]
    for dy in range(padded.shape[-2] - h + 1):
        for dx in range(padded.shape[-1] - w + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            if torch.equal(crop, out):
                return dy, dx, False
            if torch.equal(crop.flip(-1), out):
                return dy, dx, True
    return None


def test_augment_batch():
    x = torch.randn(16, 3, 32, 32)
    x0 = x.clone()
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    c = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, x0), "input must not be modified"
    assert not torch.equal(a, x)
    assert sum(not torch.equal(a[i], x[i]) for i in range(16)) >= 12

    fill = (-1.0, -2.0, -3.0)
    out = augment_batch(x, torch.Generator().manual_seed(5), fill=fill)
    padded = torch.tensor(fill).view(3, 1, 1).expand(3, 40, 40).clone()
    padded[:, 4:36, 4:36] = x[0]
    found = _find_crop(padded, out[0])
    assert found is not None
    flips = []
    for i in range(16):
        p = padded.clone()
        p[:, 4:36, 4:36] = x[i]
        flips.append(_find_crop(p, out[i])[2])
    assert any(flips) and not all(flips)

    crop_only = augment_batch(x, torch.Generator().manual_seed(5), kind="crop")
    p = torch.zeros(3, 40, 40)
    p[:, 4:36, 4:36] = x[1]
    assert _find_crop(p, crop_only[1]) is not None and not _find_crop(p, crop_only[1])[2]

    ds = load_dataset("synthetic_image", num_samples=20)
    assert torch.equal(ds.augment_batch(ds.train_x[:4], torch.Generator().manual_seed(0)),
                       augment_batch(ds.train_x[:4], torch.Generator().manual_seed(0)))
    with pytest.raises(ConfigError):
        augment_batch(torch.randn(4, 40), torch.Generator())


# ----------------------------------------------------------------------------- ImageNet-32


def _write_fake_imagenet32(folder, n_per_batch=3, n_val=5, batches=10, pickled=(), seed=0):
    """Files in the real downsampled-ImageNet format: <stem>.npz with `data` (N, 3072) uint8,
    channel-major, and 1-based `labels` (pickled without extension for stems in `pickled`)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw = {}
    stems = [f"train_data_batch_{i}" for i in range(1, batches + 1)] + ["val_data"]
    for stem in stems:
        n = n_val if stem == "val_data" else n_per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(1, 1001, size=n)
        labels[0] = 1000 if stem == "val_data" else 1  # both ends of the 1-based range
        raw[stem] = (data, labels)
        if stem in pickled:
            with open(folder / stem, "wb") as f:
                pickle.dump({"data": data, "labels": labels.tolist(), "mean": data.mean(0)}, f)
        else:
            np.savez(folder / f"{stem}.npz", data=data, labels=labels, mean=data.mean(0))
    return raw


def test_imagenet32_reads_the_official_batch_format(tmp_path):
    raw = _write_fake_imagenet32(tmp_path / "imagenet32", pickled=("train_data_batch_3",))
    ds = load_dataset("imagenet32", root=str(tmp_path))
    assert ds.num_classes == 1000 and ds.input_shape == (3, 32, 32) and ds.augment == "crop_flip"
    assert ds.train_x.shape == (30, 3, 32, 32) and ds.test_x.shape == (5, 3, 32, 32)
    # order: batches 1..10 (numeric, not 1, 10, 2, ...), labels shifted to 0-based
    want_y = np.concatenate([raw[f"train_data_batch_{i}"][1] for i in range(1, 11)]) - 1
    assert ds.train_y.tolist() == want_y.tolist() and ds.train_y.min() == 0
    assert ds.test_y[0] == 999
    # pixel (c, h, w) of a row is data[c*1024 + h*32 + w], kept as uint8, normalised to [-1, 1]
    assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8 and ds.norm == ((0.5,) * 3, (0.5,) * 3)
    data = raw["train_data_batch_2"][0]
    img = ds.train_x[3]  # first image of batch 2
    img_float = to_float(ds.train_x[3:4], pixel_table(ds.norm))[0]
    for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert img[c, h, w].item() == data[0, c * 1024 + h * 32 + w]
        assert img_float[c, h, w].item() == pytest.approx(data[0, c * 1024 + h * 32 + w] / 127.5 - 1.0, abs=1e-6)
    assert ds.fill == (-1.0, -1.0, -1.0)
    assert load_dataset("imagenet32", root=str(tmp_path), train_batches=2).train_x.shape[0] == 6


def test_imagenet32_missing_files_and_bad_option(tmp_path):
    _write_fake_imagenet32(tmp_path / "imagenet32", batches=4)
    for download in (False, True):
        with pytest.raises(ConfigError) as e:
            load_dataset("imagenet32", root=str(tmp_path), download=download)
        msg = str(e.value)
        assert "\n" not in msg and str(tmp_path / "imagenet32") in msg and "fix:" in msg
        assert "train_data_batch_5.npz" in msg and "train_data_batch_4" not in msg and "val_data" not in msg
        assert ("cannot fetch" in msg) == download
    assert len(load_dataset("imagenet32", root=str(tmp_path), train_batches=4).train_y) == 12
    with pytest.raises(ConfigError, match="train_batches"):
        load_dataset("imagenet32", root=str(tmp_path), train_batches=11)
    with pytest.raises(ConfigError, match="resize"):
        load_dataset("imagenet32", root=str(tmp_path), resize=64)
