"""The torchvision datasets (CIFAR-10/100, MNIST, Fashion-MNIST, SVHN), read from the usual
torchvision layout under `root` (downloaded only when asked to) and kept as uint8 pixels with
their normalisation constants."""
from __future__ import annotations

import os

import numpy as np

from qgm_ray import errors
from qgm_ray.data.record import Dataset
from qgm_ray.data.tensors import _dataset
from qgm_ray.errors import ConfigError

# Normalisation constants of the official QGM code (pcode/datasets/prepare_data.py) where it
# has them; Fashion-MNIST's are the usual ones. SVHN: the official code does not augment it
# (flipping digits changes them); pass augment="crop" to crop only.
_TORCHVISION = {
    "cifar10": dict(cls="CIFAR10", layout="NHWC", num_classes=10, augment="crop_flip",
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
                    where="cifar-10-batches-py"),
    "cifar100": dict(cls="CIFAR100", layout="NHWC", num_classes=100, augment="crop_flip",
                     mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
                     where="cifar-100-python"),
    "mnist": dict(cls="MNIST", layout="NHW", num_classes=10, augment=None,
                  mean=(0.1307,), std=(0.3081,), where="MNIST/raw"),
    "fashion_mnist": dict(cls="FashionMNIST", layout="NHW", num_classes=10, augment=None,
                          mean=(0.2860,), std=(0.3530,), where="FashionMNIST/raw"),
    "svhn": dict(cls="SVHN", layout="NCHW", num_classes=10, augment=None,
                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), where="svhn"),
}


def _load_torchvision(name: str, root: str, download: bool) -> Dataset:
    spec = _TORCHVISION[name]
    train, test = _open_torchvision(name, root, download)
    train_x, train_y = _to_tensors(train, spec)
    test_x, test_y = _to_tensors(test, spec)
    fill = tuple(-m / s for m, s in zip(spec["mean"], spec["std"]))
    return _dataset(name, train_x, train_y, test_x, test_y, spec["num_classes"], spec["augment"], fill,
                    norm=(spec["mean"], spec["std"]))


def _open_torchvision(name: str, root: str, download: bool):
    """The (train, test) torchvision dataset objects; a missing file is a ConfigError."""
    import torchvision.datasets as tvd

    spec = _TORCHVISION[name]
    cls = getattr(tvd, spec["cls"])
    # torchvision's SVHN puts its .mat files straight into root; give it a folder.
    tv_root = os.path.join(root, "svhn") if name == "svhn" else root
    where = os.path.abspath(os.path.join(root, spec["where"]))
    try:
        if name == "svhn":
            return cls(tv_root, split="train", download=download), cls(tv_root, split="test", download=download)
        return cls(tv_root, train=True, download=download), cls(tv_root, train=False, download=download)
    except (RuntimeError, OSError) as e:
        if download:
            raise ConfigError(
                f"dataset {name!r}: download into {where} failed ({errors.first_line(e)}); "
                f"check the internet connection, or copy the torchvision files there"
            ) from None
        raise ConfigError(
            f"dataset {name!r} not found (or corrupted) at {where}; fix: run once with "
            f"--set data.download=true on a machine with internet, or copy the torchvision files there"
        ) from None


def _to_tensors(ds, spec: dict):
    """A torchvision dataset's uint8 array -> uint8 NCHW tensor (normalised per batch: `to_float`)."""
    import torch
    data = ds.data
    data = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
    if spec["layout"] == "NHWC":
        data = data.permute(0, 3, 1, 2)
    elif spec["layout"] == "NHW":
        data = data.unsqueeze(1)
    x = data.contiguous()
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = ds.labels  # SVHN
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return x, y
