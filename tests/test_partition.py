import csv

import numpy as np
import pytest

import qgm_ray.partition as partition
from qgm_ray.errors import ConfigError
from qgm_ray.partition import (
    PARTITIONS,
    class_histograms,
    dirichlet_partition,
    heterogeneity,
    iid_partition,
    make_partition,
    sorted_partition,
    write_partition_csv,
)

C = 10
LABELS = np.random.default_rng(123).integers(0, C, size=6000)


def _check_cover(parts, n_samples, n_clients):
    assert len(parts) == n_clients
    assert all(len(p) > 0 for p in parts)
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)  # sorted, unique
    flat = np.concatenate(parts)
    assert len(flat) == n_samples and len(np.unique(flat)) == n_samples  # disjoint cover


@pytest.mark.parametrize("kind", PARTITIONS)
@pytest.mark.parametrize("n_clients", [1, 7, 16, 32])
def test_disjoint_cover_no_empty_client(kind, n_clients):
    parts = make_partition(kind, LABELS, n_clients, alpha=0.1, seed=0)
    _check_cover(parts, len(LABELS), n_clients)


@pytest.mark.parametrize("kind", PARTITIONS)
def test_seeded(kind):
    a = make_partition(kind, LABELS, 8, alpha=0.5, seed=1)
    b = make_partition(kind, LABELS, 8, alpha=0.5, seed=1)
    c = make_partition(kind, LABELS, 8, alpha=0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_heterogeneity_falls_as_alpha_grows():
    def mean_h(alpha):
        return np.mean([heterogeneity(LABELS, dirichlet_partition(LABELS, 16, alpha, s), C) for s in range(4)])

    h01, h1, h10 = mean_h(0.1), mean_h(1.0), mean_h(10.0)
    assert h01 > h1 > h10
    assert h01 > 0.5 and h10 < 0.2  # alpha=0.1 about one class per client, 10 near iid


def test_dirichlet_min_size_and_equal_size():
    n = 16
    parts = dirichlet_partition(LABELS, n, 0.1, seed=3)
    # groups of 10 then 6 clients: each client gets at least half its group's mean size
    assert min(map(len, parts)) >= int(0.5 * len(LABELS) / n) - 1
    eq = dirichlet_partition(LABELS, n, 0.1, seed=3, equal_size=True)
    assert {len(p) for p in eq} == {len(LABELS) // n}
    flat = np.concatenate(eq)
    assert len(np.unique(flat)) == len(flat)
    # the re-slicing keeps the non-iid structure: shards are still far from iid
    assert heterogeneity(LABELS, eq, C) > heterogeneity(LABELS, iid_partition(LABELS, n, 3), C) + 0.2
    # odd total: remainder dropped, as in the official code
    eq7 = dirichlet_partition(LABELS[:6001 - 2], 7, 1.0, seed=0, equal_size=True)
    assert {len(p) for p in eq7} == {5999 // 7}


def test_dirichlet_single_group_and_label_values():
    labels = np.repeat(np.array([3, 5, 9]), 200)  # sparse label values, no class 0
    parts = dirichlet_partition(labels, 12, 1.0, seed=0, clients_per_group=None)
    _check_cover(parts, len(labels), 12)
    assert class_histograms(labels, parts, 10)[:, [0, 1, 2]].sum() == 0


def test_dirichlet_errors(monkeypatch):
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet_partition(LABELS, 4, 0.0, seed=0)
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet_partition(LABELS, 4, -1, seed=0)
    with pytest.raises(ConfigError, match="alpha"):
        make_partition("dirichlet", LABELS, 4)
    with pytest.raises(ConfigError, match="at least one sample"):
        dirichlet_partition(LABELS[:3], 4, 1.0, seed=0)
    monkeypatch.setattr(partition, "MAX_TRIES", 20)
    with pytest.raises(ConfigError, match="larger data.alpha or fewer clients"):
        dirichlet_partition(LABELS, 64, 0.001, seed=0, clients_per_group=None)
    with pytest.raises(ConfigError, match="iid, dirichlet, sorted"):
        make_partition("pathological", LABELS, 4)


def test_iid_partition():
    parts = iid_partition(LABELS, 7, seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert heterogeneity(LABELS, parts, C) < 0.1


def test_sorted_partition():
    labels = np.repeat(np.arange(C), 100)
    parts = sorted_partition(labels, 10, seed=0)
    hist = class_histograms(labels, parts, C)
    np.testing.assert_array_equal(hist, 100 * np.eye(C, dtype=np.int64))  # one class each
    assert heterogeneity(labels, parts, C) == pytest.approx(0.9)
    parts = sorted_partition(LABELS, 20, seed=0)
    assert all(np.count_nonzero(h) <= 2 for h in class_histograms(LABELS, parts, C))


def test_class_histograms_sum():
    parts = dirichlet_partition(LABELS, 8, 0.3, seed=0)
    hist = class_histograms(LABELS, parts, C)
    assert hist.shape == (8, C) and hist.dtype == np.int64
    np.testing.assert_array_equal(hist.sum(axis=1), [len(p) for p in parts])
    np.testing.assert_array_equal(hist.sum(axis=0), np.bincount(LABELS, minlength=C))
    assert 0.0 <= heterogeneity(LABELS, parts, C) <= 1.0


def test_write_partition_csv(tmp_path):
    parts = dirichlet_partition(LABELS, 5, 1.0, seed=0)
    path = tmp_path / "run" / "partition.csv"
    write_partition_csv(path, LABELS, parts, C)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["client", "size"] + [f"class_{c}" for c in range(C)]
    assert [int(r["client"]) for r in rows] == list(range(5))
    for r, p in zip(rows, parts):
        assert int(r["size"]) == len(p) == sum(int(r[f"class_{c}"]) for c in range(C))
