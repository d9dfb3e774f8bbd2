"""How a built-in loader's tensors become the Dataset record: inputs standardised per channel
on the training split, float32 inputs or uint8 pixels with their `norm`, int64 labels."""
from __future__ import annotations

from typing import TYPE_CHECKING

from qgm_ray.data.record import Dataset

# torch is imported where a tensor is made: validating a config reads only the names and
# option tables of the registry.
if TYPE_CHECKING:
    import torch


def _standardise(train_x: torch.Tensor, test_x: torch.Tensor):
    """One mean/std per channel (dim 1), taken from the training split only."""
    dims = [d for d in range(train_x.dim()) if d != 1]
    mean = train_x.mean(dim=dims, keepdim=True)
    std = train_x.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return (train_x - mean) / std, (test_x - mean) / std


def _dataset(name, train_x, train_y, test_x, test_y, num_classes, augment=None, fill=None, norm=None) -> Dataset:
    """float32 inputs, or uint8 pixels left as they are when `norm` says how to normalise them."""
    import torch
    if norm is not None:
        assert train_x.dtype == test_x.dtype == torch.uint8, "norm is for uint8 pixels"
        norm = (tuple(float(m) for m in norm[0]), tuple(float(s) for s in norm[1]))
    x_dtype = torch.float32 if norm is None else torch.uint8
    return Dataset(
        name=name,
        train_x=train_x.to(x_dtype).contiguous(),
        train_y=train_y.long().contiguous(),
        test_x=test_x.to(x_dtype).contiguous(),
        test_y=test_y.long().contiguous(),
        num_classes=int(num_classes),
        input_shape=tuple(train_x.shape[1:]),
        augment=augment,
        fill=fill,
        norm=norm,
    )
