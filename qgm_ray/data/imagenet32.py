"""Downsampled ImageNet 32x32 (`imagenet32`), read from Chrabaszcz et al.'s batch files under
`root/imagenet32` and kept as uint8 pixels."""
from __future__ import annotations

import os
import pickle

import numpy as np

from qgm_ray.data.record import Dataset
from qgm_ray.data.tensors import _dataset
from qgm_ray.errors import ConfigError

IMAGENET32_FOLDER = "imagenet32"
IMAGENET32_TRAIN = tuple(f"train_data_batch_{i}" for i in range(1, 11))
IMAGENET32_VAL = "val_data"


def _read_imagenet32_batch(folder: str, stem: str):
    """One batch of Chrabaszcz et al.'s downsampled ImageNet: `<stem>.npz` (the current
    release) or the pickled `<stem>` the official QGM loader reads. Keys `data` (N, 3072)
    uint8, channel-major (1024 R, 1024 G, 1024 B), and `labels` 1..1000."""
    npz = os.path.join(folder, stem + ".npz")
    if os.path.exists(npz):
        with np.load(npz) as f:
            data, labels = f["data"], f["labels"]
    else:
        with open(os.path.join(folder, stem), "rb") as f:
            entry = pickle.load(f)
        data, labels = entry["data"], entry["labels"]
    return np.asarray(data, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _load_imagenet32(root, download, seed, train_batches=10) -> Dataset:
    """Downsampled ImageNet 32x32 (1.28M train / 50k val images, 1000 classes), normalised
    with mean = std = 0.5 and augmented by crop + flip, as in the official code. Stored as
    uint8, the full training set is 1,281,167 x 3072 B = 3.94 GB (15.7 GB as float32):
    `train_batches: k` reads only the first k of the ten batches (~128k images each)."""
    import torch
    if isinstance(train_batches, bool) or not isinstance(train_batches, int) or not 1 <= train_batches <= 10:
        raise ConfigError(f"dataset 'imagenet32': option train_batches must be an integer in 1..10, got {train_batches!r}")
    folder = os.path.abspath(os.path.join(root, IMAGENET32_FOLDER))
    stems = IMAGENET32_TRAIN[:train_batches] + (IMAGENET32_VAL,)
    missing = [s for s in stems
               if not os.path.exists(os.path.join(folder, s + ".npz")) and not os.path.exists(os.path.join(folder, s))]
    if missing:
        # Downsampled ImageNet needs an ImageNet account: there is nothing we may fetch.
        asked = "data.download=true cannot fetch it (it needs an ImageNet account); " if download else ""
        raise ConfigError(
            f"dataset 'imagenet32': missing files in {folder}: {', '.join(m + '.npz' for m in missing)}; "
            f"fix: {asked}download Imagenet32_train_npz.zip and Imagenet32_val_npz.zip from the ImageNet "
            f"website (downsampled ImageNet) and unzip their files into {folder}"
        )
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def tensors(names):
        parts = [_read_imagenet32_batch(folder, s) for s in names]
        data = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ConfigError(f"dataset 'imagenet32': {folder} holds arrays of shape {data.shape}, "
                              f"expected (N, 3072) rows of 32x32 RGB images")
        if labels.min() < 1 or labels.max() > 1000:
            raise ConfigError(f"dataset 'imagenet32': labels in {folder} must be 1..1000 (1-based), "
                              f"got {labels.min()}..{labels.max()}")
        return torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels - 1)

    train_x, train_y = tensors(stems[:-1])
    test_x, test_y = tensors(stems[-1:])
    fill = tuple(-m / s for m, s in zip(mean, std))
    return _dataset("imagenet32", train_x, train_y, test_x, test_y, 1000, "crop_flip", fill, norm=(mean, std))
