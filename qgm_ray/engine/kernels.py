"""Per-client layers as batched matrix products: a packed block's step without vmap.

`vmap` turns k clients' Conv1d into one grouped convolution, which oneDNN runs several times
slower than a convolution of the same FLOPs, and its Python machinery (functional_call, pytree)
costs more than a small model's arithmetic. Here a block's k clients run the model's own
forward on their k*b samples as one batch, with every parametrised layer swapped for one batched
matrix product over the k clients: Linear as `baddbmm`, Conv1d as im2col (`unfold`) and
`baddbmm`, each with its backward written out (autograd.Function), while autograd runs the
rest of the model. The gradient of the sum of the k clients' mean losses is, row by row,
each client's own gradient.

The layer functions are engine/batched_layers.py's (`linear`, `conv1d`, importable from here
too): client i's numbers depend on row i only, so a block's rows equal lone clients' to a
float32 rounding bound (tests/test_kernels.py) and, kernels being chosen from the config and
the model alone (`choose`), every process computes the same bits.

A model qualifies (`supports`) when every module holding parameters is a Linear or a Conv1d,
it holds no buffers (BatchNorm statistics) and no dropout, its other leaf modules act on each
sample alone (SAMPLEWISE), and its forward over k*b samples equals k forwards over b (a probe
at build: a model whose own forward mixes samples stays on vmap).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from qgm_ray.engine.batched_layers import conv1d, linear

__all__ = ["SAMPLEWISE", "BatchedModel", "choose", "conv1d", "linear", "supports"]

# Modules without parameters whose output for a sample depends on that sample alone.
SAMPLEWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.Identity, nn.Flatten,
              nn.Unflatten, nn.MaxPool1d, nn.AvgPool1d)


class _Batched(nn.Module):
    """A parametrised layer of the batched twin: reads its (k, ...) weights from `tensors`,
    set before each forward, and sees the k clients' samples as one (k*n, ...) batch."""

    def __init__(self, layer: nn.Module, name: str):
        super().__init__()
        self.name = name
        self.tensors: dict = {}
        if isinstance(layer, nn.Conv1d):
            self.conv = (layer.stride[0], layer.padding[0], layer.dilation[0])
        else:
            self.conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.tensors[self.name + ".weight"], self.tensors.get(self.name + ".bias")
        k = w.shape[0]
        xs = x.reshape(k, x.shape[0] // k, *x.shape[1:])
        out = linear(xs, w, b) if self.conv is None else conv1d(xs, w, b, *self.conv)
        return out.flatten(0, 1)


def _qualifies(model: nn.Module) -> bool:
    if any(True for _ in model.buffers()):
        return False
    for m in model.modules():
        if isinstance(m, nn.Linear):
            continue
        if isinstance(m, nn.Conv1d):
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return False
            continue
        if any(True for _ in m.parameters(recurse=False)):
            return False
        if m is not model and not list(m.children()) and not isinstance(m, SAMPLEWISE):
            return False
    return True


class BatchedModel:
    """The model's own forward over k clients' (k, b, ...) samples, each Linear / Conv1d
    swapped for its batched function over the clients' (k, ...) weights."""

    def __init__(self, model: nn.Module):
        self.twin = copy.deepcopy(model).train()
        self.layers = []
        for name, m in list(self.twin.named_modules()):
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                parent, _, attr = name.rpartition(".")
                layer = _Batched(m, name)
                setattr(self.twin.get_submodule(parent) if parent else self.twin, attr, layer)
                self.layers.append(layer)
        for p in list(self.twin.parameters()):
            p.requires_grad_(False)

    def logits(self, tensors: dict, x: torch.Tensor) -> torch.Tensor:
        """(k, b, classes) from {parameter name: (k, *shape)} and x (k, b, ...)."""
        for layer in self.layers:
            layer.tensors = tensors
        try:
            out = self.twin(x.flatten(0, 1))
        finally:
            for layer in self.layers:
                layer.tensors = {}
        return out.view(x.shape[0], x.shape[1], *out.shape[1:])

    def gradients(self, views: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """({name: (k, *shape)} gradients, (k,) losses): row i is client i's gradient of its mean
        cross-entropy on its batch x[i], y[i]."""
        leaves = {name: v.detach().requires_grad_() for name, v in views.items()}
        logits = self.logits(leaves, x)
        k, b = y.shape
        losses = F.cross_entropy(logits.flatten(0, 1), y.reshape(-1), reduction="none").view(k, b).mean(1)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return dict(zip(leaves, grads)), losses.detach()


def supports(model: nn.Module, input_shape, probe_dtype=None) -> bool:
    """Whether `model` runs batched: its layers qualify, and on a probe of 2 clients x 2 samples
    its batched forward equals the per-client forwards (a forward that mixes samples differs
    by far more than rounding)."""
    if not _qualifies(model):
        return False
    dtype = probe_dtype or next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    views = {}
    for name, p in params.items():
        views[name] = torch.stack([p.detach(), p.detach() * 0.5 + 0.01])
    x = torch.randn(2, 2, *input_shape, generator=gen, dtype=dtype).to(next(model.parameters()).device)
    try:
        with torch.no_grad():
            got = BatchedModel(model).logits(views, x)
            want = torch.stack([torch.func.functional_call(model, {n: v[i] for n, v in views.items()}, (x[i],))
                                for i in range(2)])
    except Exception:   # noqa: BLE001 -- a forward the twin cannot run stays on vmap
        return False
    return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5))


def choose(mode: str, model: nn.Module, input_shape, device, packed: bool) -> str:
    """The kernels of a packed block: 'batched' or 'vmap', from `compute.kernels` (auto | vmap |
    batched), the model and the device, never from a timing (a choice that varied between
    processes or runs would change the numbers of Ray against local, a resume or a replay).
    auto: batched on CPU where the model qualifies; CUDA keeps vmap, which fills a GPU."""
    if not packed or mode == "vmap":
        return "vmap"
    if mode == "auto" and str(device).startswith("cuda"):
        return "vmap"
    return "batched" if supports(model, input_shape) else "vmap"
