"""Split a label array over clients: iid, Dirichlet non-iid, or sorted (pathological).

Pure numpy and seeded: the same (labels, n_clients, alpha, seed) gives the same partition in
any process. Every function returns a list of n_clients sorted int64 index arrays, disjoint,
none empty. The Dirichlet scheme follows the official QGM code
(github.com/epfml/quasi-global-momentum, pcode/datasets/partition_data.py,
`build_non_iid_by_dirichlet`).
"""

from __future__ import annotations

import csv
import math
import os

import numpy as np

from qgm_ray.errors import ConfigError

PARTITIONS = ("iid", "dirichlet", "sorted")

# The official code draws the Dirichlet split for groups of at most 10 clients at a time
# (`n_auxi_workers = 10`), each group over its own random slice of the data. With 10 classes
# and alpha=0.1 a single draw over 16 or 32 clients almost never gives every client half the
# mean size (docs/results/heterogeneity/README.md), so the grouping is what makes the paper's
# settings feasible at all.
CLIENTS_PER_GROUP = 10
MAX_TRIES = 10_000


def _as_labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integers")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError("labels must be non-negative")
    return y


def _check_n(n_clients, n_samples: int) -> int:
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise ConfigError(f"topology.n_clients={n_clients!r} must be an integer >= 1")
    if n_samples < n_clients:
        raise ConfigError(
            f"cannot split {n_samples} samples over topology.n_clients={n_clients}: "
            "every client needs at least one sample (fewer clients, or more data: data.options.num_samples "
            "for mnist1d, synthetic and synthetic_image)"
        )
    return int(n_clients)


def _finish(groups) -> list[np.ndarray]:
    return [np.sort(np.asarray(g, dtype=np.int64)) for g in groups]


def iid_partition(labels, n_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into n_clients near-equal shards (sizes differ by at most 1)."""
    y = _as_labels(labels)
    n = _check_n(n_clients, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    return _finish(np.array_split(perm, n))


def sorted_partition(labels, n_clients: int, seed: int) -> list[np.ndarray]:
    """Sort by label, cut into contiguous near-equal shards: each client sees 1-2 classes.

    The seed shuffles samples within a class, which decides the members of shards that
    share a class.
    """
    y = _as_labels(labels)
    n = _check_n(n_clients, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    order = perm[np.argsort(y[perm], kind="stable")]
    return _finish(np.array_split(order, n))


def _dirichlet_group(rng, idx: np.ndarray, y: np.ndarray, n: int, alpha: float, min_size: int):
    """One group of the official loop: redraw until every client has >= min_size samples.

    idx are (already shuffled) sample indices. Returns a list of n index lists or None.
    """
    total = len(idx)
    by_class = [idx[y[idx] == c] for c in np.unique(y[idx])]
    for _ in range(MAX_TRIES):
        sizes = np.zeros(n, dtype=np.int64)
        cuts = []
        for members in by_class:
            p = rng.dirichlet(np.full(n, alpha))
            # official balancing: clients already at or above the mean size get nothing more
            p = p * (sizes < total / n)
            if p.sum() <= 0:  # every eligible share underflowed to 0 (tiny alpha): redraw
                break
            cut = (np.cumsum(p / p.sum()) * len(members)).astype(np.int64)[:-1]
            cuts.append(cut)
            sizes += np.diff(cut, prepend=0, append=len(members))
        else:
            if sizes.min() >= min_size:
                out = [[] for _ in range(n)]
                for members, cut in zip(by_class, cuts):
                    for k, part in enumerate(np.split(members, cut)):
                        out[k].append(part)
                return [np.concatenate(parts) for parts in out]
    return None


def dirichlet_partition(
    labels,
    n_clients: int,
    alpha: float,
    seed: int,
    equal_size: bool = False,
    min_size_ratio: float = 0.5,
    clients_per_group: int | None = CLIENTS_PER_GROUP,
) -> list[np.ndarray]:
    """Non-iid split: per class, client shares ~ Dir(alpha). Small alpha = few classes per client.

    As in the official code: shuffle once; clients go in groups of `clients_per_group` (10;
    None = one group of all clients), each group taking a slice of the shuffled data in
    proportion to its size; within a group, for each class draw shares ~ Dir(alpha), zero the
    shares of clients already above the group's mean size, and cut that class's indices at the
    cumulative shares. A group is redrawn until each client holds at least
    min_size_ratio * (group data / group clients) samples (and at least one).

    equal_size=True reproduces the official re-slicing: the clients' index groups are
    concatenated in client order and cut into n_clients shards of floor(N / n_clients) samples;
    the last N mod n_clients samples of that concatenation are dropped, as there.
    """
    y = _as_labels(labels)
    N = len(y)
    n = _check_n(n_clients, N)
    if alpha is None or not np.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"data.alpha={alpha!r} must be a finite number > 0 for a dirichlet partition")
    if not 0 <= min_size_ratio <= 1:
        raise ConfigError(f"min_size_ratio={min_size_ratio!r} must lie in [0, 1]")
    per_group = n if not clients_per_group else min(int(clients_per_group), n)

    rng = np.random.default_rng(seed)
    perm = rng.permutation(N)
    num_groups = math.ceil(n / per_group)
    group_sizes = [per_group] * (num_groups - 1) + [n - per_group * (num_groups - 1)]
    chunk = int(per_group / n * N)  # official: every group but the last gets this many samples

    parts: list[np.ndarray] = []
    start = 0
    for g, g_n in enumerate(group_sizes):
        idx = perm[start:] if g == num_groups - 1 else perm[start : start + chunk]
        start += chunk
        if len(idx) < g_n:
            raise ConfigError(f"cannot split {N} samples over topology.n_clients={n}: too few samples")
        min_size = max(1, int(min_size_ratio * len(idx) / g_n))
        got = _dirichlet_group(rng, idx, y, g_n, float(alpha), min_size)
        if got is None:
            raise ConfigError(
                f"data.alpha={alpha} with topology.n_clients={n}: no Dirichlet draw in {MAX_TRIES} "
                f"tries gave every client at least {min_size_ratio:.0%} of the mean size "
                f"({min_size} samples); use a larger data.alpha or fewer clients"
            )
        parts.extend(got)

    if equal_size:
        flat = np.concatenate(parts)
        shard = N // n
        parts = [flat[k * shard : (k + 1) * shard] for k in range(n)]
    return _finish(parts)


def make_partition(kind: str, labels, n_clients: int, alpha=None, seed: int = 0, equal_size: bool = False):
    """Dispatch on kind in PARTITIONS. alpha is required (and only used) for 'dirichlet'."""
    if kind == "iid":
        return iid_partition(labels, n_clients, seed)
    if kind == "sorted":
        return sorted_partition(labels, n_clients, seed)
    if kind == "dirichlet":
        if alpha is None:
            raise ConfigError("data.partition=dirichlet needs data.alpha (e.g. 0.1, 1, 10)")
        return dirichlet_partition(labels, n_clients, alpha, seed, equal_size=equal_size)
    raise ConfigError(f"data.partition={kind!r} is unknown; valid: {', '.join(PARTITIONS)}")


def class_histograms(labels, parts, num_classes: int) -> np.ndarray:
    """(n_clients, num_classes) int64: how many samples of each class each client holds."""
    y = _as_labels(labels)
    if y.size and y.max() >= num_classes:
        raise ValueError(f"label {int(y.max())} >= num_classes={num_classes}")
    return np.stack([np.bincount(y[p], minlength=num_classes) for p in parts]).astype(np.int64)


def heterogeneity(labels, parts, num_classes: int) -> float:
    """Mean over clients of the total-variation distance between the client's label
    distribution and the global one: 0 = every client looks like the whole data set,
    -> 1 = clients hold classes that are rare globally. In [0, 1]."""
    hist = class_histograms(labels, parts, num_classes).astype(np.float64)
    glob = hist.sum(axis=0) / hist.sum()
    local = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1)
    return float(np.mean(0.5 * np.abs(local - glob).sum(axis=1)))


def write_partition_csv(path, labels, parts, num_classes: int) -> None:
    """partition.csv: one row per client slot (its data shard): client, size, class_0, ..., class_{C-1}."""
    hist = class_histograms(labels, parts, num_classes)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["client", "size"] + [f"class_{c}" for c in range(num_classes)])
        for i, row in enumerate(hist):
            w.writerow([i, int(row.sum())] + [int(v) for v in row])
