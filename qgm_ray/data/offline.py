"""The datasets that need no files: `mnist1d` (generated with the `mnist1d` package and cached
as .npz), `digits` (bundled with scikit-learn), `synthetic` and `synthetic_image`, each
seeded, and the options each one takes."""
from __future__ import annotations

import hashlib
import json
import os
import random
from typing import TYPE_CHECKING

import numpy as np

from qgm_ray.data.record import Dataset, save_npz_atomic
from qgm_ray.data.tensors import _dataset, _standardise

# torch is imported where a tensor is made: validating a config reads only the names and
# option tables of the registry.
if TYPE_CHECKING:
    import torch

# Everything `mnist1d.data.get_dataset_args` defines except `url` (we never download).
_MNIST1D_OPTS = (
    "num_samples",
    "train_split",
    "template_len",
    "padding",
    "scale_coeff",
    "max_translation",
    "corr_noise_scale",
    "iid_noise_scale",
    "shear_scale",
    "shuffle_seq",
    "final_seq_length",
)


def _load_mnist1d(root, seed, **opts) -> Dataset:
    """MNIST-1D generated locally (the package's defaults: 5000 samples, 4000/1000 split,
    length 40). `seed` is the generator's seed; the package's own default is 42."""
    import torch
    from importlib.metadata import version

    # The cache's name holds what the package's version does not fix: the options given and
    # the seed. Its defaults are its version's, so a cached set loads without importing the
    # package (which brings matplotlib and scipy: most of a cached load's time).
    key = json.dumps({"options": opts, "seed": int(seed), "mnist1d": version("mnist1d")}, sort_keys=True)
    path = os.path.join(root, "mnist1d", hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz")
    if os.path.exists(path):
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        args = {**_mnist1d_default_args(), **opts, "seed": int(seed)}
        arrays = _generate_mnist1d(args)
        save_npz_atomic(path, arrays)
    train_x = torch.from_numpy(arrays["x"]).float().unsqueeze(1)
    test_x = torch.from_numpy(arrays["x_test"]).float().unsqueeze(1)
    train_x, test_x = _standardise(train_x, test_x)
    y, y_test = torch.from_numpy(arrays["y"]), torch.from_numpy(arrays["y_test"])
    return _dataset("mnist1d", train_x, y, test_x, y_test, num_classes=10)


def _mnist1d_default_args() -> dict:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args(as_dict=True)
    args.pop("url", None)
    return args


def _generate_mnist1d(args: dict) -> dict:
    import mnist1d.data
    from mnist1d.utils import ObjectView

    # make_dataset reseeds the global `random` and `np.random`; put them back afterwards.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = mnist1d.data.make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": np.asarray(d["x"], dtype=np.float32),
        "y": np.asarray(d["y"], dtype=np.int64),
        "x_test": np.asarray(d["x_test"], dtype=np.float32),
        "y_test": np.asarray(d["y_test"], dtype=np.int64),
    }


def _load_digits(root, seed) -> Dataset:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx_train, idx_test = train_test_split(
        np.arange(len(d.target)), test_size=0.2, stratify=d.target, random_state=seed
    )
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(d.target.astype(np.int64))
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    train_x, test_x = _standardise(x[idx_train], x[idx_test])
    return _dataset("digits", train_x, y[idx_train], test_x, y[idx_test], num_classes=10)


def _balanced_labels(n: int, num_classes: int, g: torch.Generator) -> torch.Tensor:
    import torch
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


def _load_synthetic(root, seed, num_samples=2000, num_features=20, num_classes=4, separation=3.0) -> Dataset:
    """Gaussian mixture: class means ~ N(0, separation^2 / num_features * I) scaled to norm
    `separation`, unit-variance noise. 80/20 split, balanced classes."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    means = torch.randn(num_classes, num_features, generator=g)
    means = separation * means / means.norm(dim=1, keepdim=True)
    y = _balanced_labels(num_samples, num_classes, g)
    x = means[y] + torch.randn(num_samples, num_features, generator=g)
    n_train = int(0.8 * num_samples)
    train_x, test_x = _standardise(x[:n_train], x[n_train:])
    return _dataset("synthetic", train_x, y[:n_train], test_x, y[n_train:], num_classes)


def _load_synthetic_image(root, seed, num_samples=1000, shape=(3, 32, 32), num_classes=10, separation=0.05):
    """Random images around one random prototype per class: learnable, CIFAR-shaped, free."""
    import torch
    shape = tuple(int(s) for s in shape)
    g = torch.Generator().manual_seed(int(seed))
    prototypes = separation * torch.randn(num_classes, *shape, generator=g)
    y = _balanced_labels(num_samples, num_classes, g)
    x = prototypes[y] + torch.randn(num_samples, *shape, generator=g)
    n_train = int(0.8 * num_samples)
    colour_32px = len(shape) == 3 and shape[0] == 3 and shape[1:] == (32, 32)
    return _dataset(
        "synthetic_image", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes,
        augment="crop_flip" if colour_32px else None,
    )


_OFFLINE = {
    "mnist1d": _load_mnist1d,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "synthetic_image": _load_synthetic_image,
}
_OFFLINE_OPTS = {
    "mnist1d": _MNIST1D_OPTS,
    "digits": (),
    "synthetic": ("num_samples", "num_features", "num_classes", "separation"),
    "synthetic_image": ("num_samples", "shape", "num_classes", "separation"),
}
