"""Tensors across Ray's object store: a ClientActor receives numpy arrays that Ray resolved from
object refs and returns numpy arrays that Ray puts in the store; these turn one into the other
over the same memory, so no crossing changes a bit or copies."""
from __future__ import annotations

import warnings

import numpy as np
import torch


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor over an object-store array. Those arrays are read-only; nothing here
    writes to them (mix reads, load/copy_ reads), so torch's not-writable warning is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def to_numpy(value):
    """CPU tensors (in tuples / lists, None kept) -> numpy arrays over the same memory."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, (tuple, list)):
        return type(value)(to_numpy(v) for v in value)
    return value


def to_torch(value):
    """The inverse of `to_numpy`, zero-copy."""
    if isinstance(value, np.ndarray):
        return as_tensor(value)
    if isinstance(value, (tuple, list)):
        return type(value)(to_torch(v) for v in value)
    return value
