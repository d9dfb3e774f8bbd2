"""One decentralized client: its model, its data partition, its algorithm state.

Plain Python, no Ray: the local engine holds n of these, a ClientActor holds k. The model's
parameters are views into one flat float32 vector (`self.params`), and their gradients views
into another, so the algorithms work on flat tensors with no per-step copying.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from qgm_ray.data import augment_batch


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
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(accuracy in [0, 1], mean cross-entropy) of `model` on (x, y)."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    n = max(1, len(x))
    return correct / n, loss_sum / n


class BatchSampler:
    """Reshuffles the client's indices every local epoch; owns its RNG so it can be checkpointed."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state(), "order": self.order.clone(), "pos": torch.tensor(self.pos)}

    def load_state_dict(self, s: dict) -> None:
        self.generator.set_state(s["rng"])
        self.order = s["order"].clone()
        self.pos = int(s["pos"])


class Client:
    def __init__(self, client_id: int, model: nn.Module, algorithm, x: torch.Tensor, y: torch.Tensor,
                 batch_size: int, seed: int, augment: Optional[str] = None, device: str = "cpu"):
        self.id = client_id
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.algorithm = algorithm
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.augment = augment
        self.sampler = BatchSampler(len(x), batch_size, seed=seed * 1_000_003 + client_id)
        params = list(self.model.parameters())
        self.params = flatten_into_views(params)
        for p in params:
            p.grad = torch.zeros_like(p)
        self.grad = flatten_into_views([p.grad for p in params])
        self.state = algorithm.init(self.params)
        self.last_loss = float("nan")

    @property
    def num_params(self) -> int:
        return self.params.numel()

    def _loss_and_grad(self) -> float:
        idx = self.sampler.next().to(self.device)
        xb, yb = self.x[idx], self.y[idx]
        if self.augment:
            xb = augment_batch(xb, self.sampler.generator, kind=self.augment)
        self.grad.zero_()
        loss = F.cross_entropy(self.model(xb), yb)
        loss.backward()
        return loss.item()

    def pre_mix(self, lr: float) -> torch.Tensor:
        """Steps 1-2 of a round: gradient on the next local batch, then the payload to send."""
        self.last_loss = self._loss_and_grad()
        return self.algorithm.pre_mix(self.state, self.params, self.grad, lr)

    def post_mix(self, mixed: torch.Tensor, lr: float) -> None:
        """Step 4: apply the neighbours' weighted payloads. In place, so the model views stay valid."""
        new = self.algorithm.post_mix(self.state, self.params, mixed.to(self.device), lr)
        self.params.copy_(new)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
        return evaluate_model(self.model, x, y, batch_size)

    # -- fresh start for an elastic join: given parameters, zero optimizer state
    def reset(self, params: torch.Tensor, buffers: Optional[torch.Tensor] = None) -> None:
        self.params.copy_(params.to(self.device))
        if buffers is not None and buffers.numel():
            load_flat_buffers(self.model, buffers.to(self.device))
        self.state = self.algorithm.init(self.params)

    # -- checkpointing: everything a replay needs to reproduce the same numbers
    def state_dict(self) -> dict:
        return {
            "id": self.id,
            "params": self.params.detach().cpu().clone(),
            "buffers": flat_buffers(self.model).cpu(),
            "algorithm": {k: v.detach().cpu().clone() for k, v in self.state.items()},
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, s: dict) -> None:
        self.params.copy_(s["params"].to(self.device))
        if s["buffers"].numel():
            load_flat_buffers(self.model, s["buffers"].to(self.device))
        self.state = {k: v.to(self.device).clone() for k, v in s["algorithm"].items()}
        self.sampler.load_state_dict(s["sampler"])
