"""The dataset record every loader returns (built-in, AG News in text.py, or a plug-in), and
the atomic cache writer they share. A module of its own so that the registry (__init__.py)
and every loader import it and not each other."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from qgm_ray.data.augment import augment_batch
from qgm_ray.errors import ConfigError

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


def memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def plugin_tensor(key: str, what: str, value) -> torch.Tensor:
    """One array a plug-in dataset returned, as a CPU tensor: numbers (numpy or torch), no
    larger than this machine's memory; one line naming `key` and `what` otherwise. Checked
    before the conversion, which copies a broadcast or non-contiguous array."""
    import torch
    if isinstance(value, torch.Tensor):
        nbytes = value.numel() * value.element_size()
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            kind = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}.get(
                value.dtype.kind, f"{value.dtype} values")
            raise ConfigError(f"{key}: {what} holds {kind} (numpy dtype {value.dtype}); expected a numeric array "
                              f"(float features, integer labels 0..C-1)")
        nbytes = value.nbytes
    else:
        raise ConfigError(f"{key}: {what} is a {type(value).__name__}; expected a numpy array or a torch tensor")
    memory = memory_bytes()
    if memory is not None and nbytes > memory:
        raise ConfigError(f"{key}: {what} of shape {tuple(value.shape)} takes {_size(nbytes)}, more than this "
                          f"machine's {_size(memory)} of memory; expected arrays that fit in memory")
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.from_numpy(np.ascontiguousarray(value))


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


