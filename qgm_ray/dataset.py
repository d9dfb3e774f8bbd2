"""The dataset record every loader returns (built-in, AG News in text.py, or a plug-in), and
the atomic cache writer they share. A module of its own so that data.py (the registry) and
text.py (one loader) both import it and not each other."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qgm_ray.augment import augment_batch

if TYPE_CHECKING:   # the fields hold tensors; importing the record (config validation) needs no torch
    import torch


@dataclass
class Dataset:
    name: str
    # (N, *input_shape): uint8 pixels when `norm` is set, else float32 normalised (int64
    # token ids for text)
    train_x: torch.Tensor
    train_y: torch.Tensor  # int64, (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple
    augment: str | None = None
    # What a zero (black) pixel becomes after normalisation, per channel. Passing it as
    # `augment_batch(..., fill=ds.fill)` pads exactly as torchvision's RandomCrop does
    # before Normalize; None means pad with 0.
    fill: tuple | None = None
    # ((mean per channel), (std per channel)) of uint8 storage: x = (x / 255 - mean) / std,
    # applied per batch by `to_float(x, pixel_table(norm))`. None: train_x/test_x are the
    # model's inputs already.
    norm: tuple | None = None

    def augment_batch(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """This dataset's training augmentation (identity when it has none)."""
        if self.augment is None:
            return x
        return augment_batch(x, generator, self.augment, fill=0.0 if self.fill is None else self.fill)


def describe(ds: Dataset) -> str:
    return (
        f"{ds.name}: {len(ds.train_y)} train / {len(ds.test_y)} test, "
        f"input {tuple(ds.input_shape)}, {ds.num_classes} classes, augment={ds.augment}"
    )


def save_npz_atomic(path: str, arrays: dict) -> None:
    # Several actors may generate the same file at once: each writes its own temporary
    # file and renames it into place. A read-only root only costs us the cache.
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass


