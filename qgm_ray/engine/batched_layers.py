"""k clients' layers as one batched matrix product each: Linear as `baddbmm`, Conv1d as im2col
(`unfold`) and `baddbmm`, each with its backward written out (autograd.Function).

Each layer function maps (k, n, ...) activations and (k, ...) weights to (k, n, ...); the
numbers of client i depend on row i only, so a block's rows equal lone clients' to a float32
rounding bound (tests/test_kernels.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
