"""Per-client layers as batched matrix products: a packed block's step without vmap.

`vmap` turns k clients' Conv1d into one grouped convolution, which oneDNN runs several times
slower than a convolution of the same FLOPs, and its Python machinery (functional_call, pytree)
costs more than a small model's arithmetic. Here a block's k clients run the model's own
forward on their k*b samples as one batch, with every parametrised layer swapped for one batched
matrix product over the k clients: Linear as `baddbmm`, Conv1d as im2col (`unfold`) and
`baddbmm`, each with its backward written out (autograd.Function), while autograd runs the
rest of the model. The gradient of the sum of the k clients' mean losses is, row by row,
each client's own gradient.

Each layer function maps (k, n, ...) activations and (k, ...) weights to (k, n, ...); the
numbers of client i depend on row i only, so a block's rows equal lone clients' to a float32
rounding bound (tests/test_kernels.py) and, kernels being chosen from the config and the model
alone (`choose`), every process computes the same bits.

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

# Modules without parameters whose output for a sample depends on that sample alone.
SAMPLEWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.Identity, nn.Flatten,
              nn.Unflatten, nn.MaxPool1d, nn.AvgPool1d)


# ---------------------------------------------------------------------------- the layer functions

def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """k clients' Linear: x (k, n, in), weight (k, out, in), bias (k, out) -> (k, n, out)."""
    return _Linear.apply(x, weight, bias)


class _Linear(torch.autograd.Function):
    """baddbmm, with a backward that returns the weight's gradient in the weight's own (k, out,
    in) layout (autograd's backward of x @ w^T returns it transposed, a copy more per step)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        wt = weight.transpose(1, 2)
        return torch.bmm(x, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, wt)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = grad.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int = 1, padding: int = 0,
           dilation: int = 1) -> torch.Tensor:
    """k clients' Conv1d (zero padding, one group): x (k, n, C_in, L), weight (k, C_out, C_in, K),
    bias (k, C_out) -> (k, n, C_out, L_out), contiguous. Each output is one dot product of
    length C_in * K, as in F.conv1d."""
    return _Conv1d.apply(x, weight, bias, stride, padding, dilation)


def _im2col(x: torch.Tensor, taps: int, stride: int, padding: int, dilation: int) -> torch.Tensor:
    """(k, n, C, L) -> (k, n * L_out, C * K): row (i, l) holds the C x K inputs output l reads."""
    k, n, c, _ = x.shape
    if padding:
        x = F.pad(x, (padding, padding))
    cols = x.unfold(-1, dilation * (taps - 1) + 1, stride)        # (k, n, C, L_out, span)
    if dilation > 1:
        cols = cols[..., ::dilation]
    return cols.permute(0, 1, 3, 2, 4).reshape(k, n * cols.shape[3], c * taps)


class _Conv1d(torch.autograd.Function):
    """im2col and one baddbmm; the backward by hand: autograd's own backward of `unfold` and of
    the strided views around it is an order of magnitude slower than these bmm and K adds."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        k, n, c_in, length = x.shape
        c_out, taps = weight.shape[1], weight.shape[3]
        cols = _im2col(x, taps, stride, padding, dilation)
        l_out = cols.shape[1] // n
        w = weight.reshape(k, c_out, c_in * taps)
        out = torch.bmm(cols, w.transpose(1, 2)) if bias is None else torch.baddbmm(bias.unsqueeze(1), cols,
                                                                                    w.transpose(1, 2))
        ctx.save_for_backward(cols, weight)
        ctx.conv = (n, length, l_out, stride, padding, dilation, bias is not None)
        return out.view(k, n, l_out, c_out).transpose(2, 3).contiguous()

    @staticmethod
    def backward(ctx, grad):
        cols, weight = ctx.saved_tensors
        n, length, l_out, stride, padding, dilation, has_bias = ctx.conv
        k, c_out, c_in, taps = weight.shape
        # (k, C_out, n * L_out): the bias's sum runs along the last dimension
        g = grad.transpose(1, 2).reshape(k, c_out, n * l_out)
        gx = gw = gb = None
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(g, cols).view_as(weight)
        if has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(2)
        if ctx.needs_input_grad[0]:
            gcols = torch.bmm(g.transpose(1, 2), weight.reshape(k, c_out, c_in * taps)).view(k, n, l_out, c_in, taps)
            gx = grad.new_zeros(k, n, c_in, length)
            for t in range(taps):
                # col2im: output l read input l * stride + t * dilation - padding; the outputs
                # whose input of tap t is padding add nothing
                first = max(0, -(-(padding - t * dilation) // stride))
                last = min(l_out - 1, (length - 1 + padding - t * dilation) // stride)
                if last < first:
                    continue
                start = first * stride + t * dilation - padding
                gx[..., start:start + stride * (last - first) + 1:stride] += gcols[:, :, first:last + 1, :, t].transpose(2, 3)
        return gx, gw, gb, None, None, None


# ---------------------------------------------------------------------------- the model, batched

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
