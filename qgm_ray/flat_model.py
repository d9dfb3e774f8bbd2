"""A model as flat vectors: a block stores each client row's parameters and floating-point
buffers as one flat vector (engine/block.py), and evaluating a row or the averaged model
(engine/evaluation.py) loads such vectors into an `nn.Module` and runs it on the test set."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qgm_ray.data import to_float


def flatten_into_views(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one flat vector and make each tensor's `.data` a view of it."""
    flat = torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else torch.zeros(0)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.data = flat[offset:offset + n].view_as(t)
        offset += n
    return flat


def flat_buffers(model: nn.Module) -> torch.Tensor:
    """Floating-point buffers (BatchNorm running stats) as one flat vector (may be empty)."""
    bufs = [b.detach().reshape(-1).float() for b in model.buffers() if b.is_floating_point()]
    return torch.cat(bufs) if bufs else torch.zeros(0)


def load_flat_buffers(model: nn.Module, flat: torch.Tensor) -> None:
    offset = 0
    for b in model.buffers():
        if b.is_floating_point():
            n = b.numel()
            b.copy_(flat[offset:offset + n].view_as(b))
            offset += n


def load_params(model: nn.Module, params: torch.Tensor, buffers: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(params[offset:offset + n].view_as(p))
            offset += n
    if buffers.numel():
        load_flat_buffers(model, buffers)


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   table: torch.Tensor | None = None) -> tuple[float, float]:
    """(accuracy in [0, 1], mean cross-entropy) of `model` on (x, y). uint8 pixels are
    normalised one evaluation batch at a time (`data.to_float` with the dataset's `table`)."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = model(to_float(x[start:start + batch_size], table))
        yb = y[start:start + batch_size]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(1, len(x))
    return correct / n, loss_sum / n
