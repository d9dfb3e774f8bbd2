"""8-bit pixels stored as uint8 and normalised per batch, where they are used: the table of
what each 8-bit value normalises to, and the gather that turns a uint8 batch into float32,
bit for bit what normalising the whole dataset at load time gives."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def pixel_table(norm: tuple) -> torch.Tensor:
    """(C, 256) float32: what each 8-bit value of each channel normalises to, computed on the
    CPU with the ops and order that normalising the whole dataset at load time used
    (float, / 255, - mean, / std). A batch looked up in this table is bit for bit that
    float32 data on any device. Computing it on the device instead would not be: CUDA
    divides by a CPU scalar as a multiply by its reciprocal (ATen's div_true_kernel_cuda),
    which rounds x / 255 differently for 126 of the 256 values (tests/test_uint8.py, emulated
    on the CPU)."""
    import torch
    mean, std = norm
    c = len(mean)
    levels = torch.arange(256, dtype=torch.uint8).expand(c, 256)
    x = levels.float().div_(255.0)
    return x.sub_(torch.tensor(mean).view(c, 1)).div_(torch.tensor(std).view(c, 1)).contiguous()


def to_float(x: torch.Tensor, table: torch.Tensor | None) -> torch.Tensor:
    """A (B, C, ...) batch of uint8 pixels as normalised float32 (a gather from `table`, on
    x's device); x unchanged when table is None (datasets stored as model inputs)."""
    import torch
    if table is None:
        return x
    c = table.shape[0]
    if x.dtype != torch.uint8 or x.dim() < 2 or x.shape[1] != c:
        raise ValueError(f"to_float: expected uint8 (B, {c}, ...) pixels, got {x.dtype} {tuple(x.shape)}")
    table = table.to(x.device)   # no-op where the caller keeps it on the device (blocks do)
    offsets = (torch.arange(c, device=x.device) * 256).view(1, c, *([1] * (x.dim() - 2)))
    return torch.take(table, x.long() + offsets)   # take: one flat gather, cheaper than indexing on CPU
