"""Quantizers: `qsgd` (s levels, stochastic rounding, one norm per row) and `sign` (scaled
sign, one scale per row). Both send one float32 per row, then packed codes.

The receiver rebuilds q from the transmitted float32 t and the integer codes as t * level
(qsgd) or +-t (sign): one IEEE-rounded float32 product or none, so q is the same bits on
both sides.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from qgm_ray.compression import bits
from qgm_ray.compression.base import Compressor, check_block, check_wire, floats_to_wire, host, tensor, wire_to_floats
from qgm_ray.compression.options import check_levels, check_unbiased
from qgm_ray.compression.stream import uniforms


def level_bits(levels: int) -> int:
    """Bits of one level in [0, s]: ceil(log2(s + 1))."""
    return levels.bit_length()


def _assemble(scale: np.ndarray, codes: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate([floats_to_wire(scale.reshape(-1, 1)), bits.pack(codes, width)], axis=1)


def _disassemble(wire: np.ndarray, d: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(r, 1) float32 scale, (r, d) codes."""
    return wire_to_floats(wire[:, :4]), bits.unpack(np.ascontiguousarray(wire[:, 4:]), d, width)


def _signed(magnitude: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """-magnitude where `negative`, in place: the float32 sign bit set (magnitudes are >= 0,
    so this is exactly the negation, -0.0 for 0)."""
    sign = negative.view(np.uint8).astype(np.uint32)
    sign <<= np.uint32(31)
    bits_of = magnitude.view(np.uint32)
    bits_of |= sign
    return magnitude


class QSGD(Compressor):
    """`qsgd` (Alistarh et al.): per row the norm ||x||_2 and, per entry, the sign and a level
    l_i in [0, s]: s |x_i| / ||x|| rounded down or up at random, up with probability its
    fractional part (a uniform from the row's stream), so E[l_i] = s |x_i| / ||x|| and
    q_i = sign(x_i) l_i ||x|| / s is unbiased. With `unbiased: false` q is scaled by
    1 / (1 + min(d / s^2, sqrt(d) / s)), the official code's `is_biased` (a contraction, as
    CHOCO's analysis asks). The row's float32 on the wire is t = ||x|| / s (times that scale),
    and q_i = sign(x_i) * (t * l_i). A row of zeros sends t = 0 and levels 0.
    Wire: t, then d codes of 1 + ceil(log2(s + 1)) bits (the sign bit, set for x_i < 0, then
    the level), packed: 4 + ceil(d (1 + ceil(log2(s + 1))) / 8) bytes."""

    def __init__(self, levels: int, unbiased: bool = True):
        self.levels = check_levels(levels)
        self.unbiased = check_unbiased(unbiased)

    def _width(self) -> int:
        return 1 + level_bits(self.levels)

    def wire_bytes(self, d: int) -> int:
        return 4 + bits.packed_bytes(d, self._width())

    def _quantize(self, rows, keys):
        """(k, 1) float32 t, (k, d) bool negative, (k, d) float32 integer levels."""
        check_block(rows, keys)
        x = host(rows)
        d, s = x.shape[1], self.levels
        norm = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
        level = np.abs(x)
        level *= np.float32(s)
        level /= np.where(norm > 0, norm, np.float32(1))        # a zero row stays zero
        low = np.floor(level)
        level -= low                                           # the fractional part
        level = np.less(uniforms(keys, d), level).astype(np.float32)
        level += low
        np.minimum(level, np.float32(s), out=level)            # rounding never passes s
        t = norm / np.float32(s)
        if not self.unbiased:
            t *= np.float32(1.0 / (1.0 + min(d / s ** 2, math.sqrt(d) / s)))
        return t, x < 0, level

    @staticmethod
    def _values(t, negative, level):
        return _signed(level * t, negative)

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return tensor(self._values(*self._quantize(rows, keys)), rows.device)

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        t, negative, level = self._quantize(rows, keys)
        width = self._width()
        codes = level.astype(np.uint32)
        codes |= negative.astype(np.uint32) << np.uint32(width - 1)
        return _assemble(t, codes, width)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        width = self._width()
        t, codes = _disassemble(wire, d, width)
        negative = (codes >> (width - 1)).astype(bool)
        level = (codes & ((1 << (width - 1)) - 1)).astype(np.float32)
        return tensor(self._values(t, negative, level), keys.device)


class ScaledSign(Compressor):
    """`sign`: q = (||x||_1 / d) sign(x), one scale per row (Karimireddy et al.'s scaled sign,
    as CHOCO-SGD's `sign`, which scales each parameter tensor; here the row is the message).
    sign(0) is +1, so one bit per entry suffices: the bit is set for x_i < 0 (-0.0 and NaN
    count as +). Wire: the float32 scale, then d bits packed: 4 + ceil(d / 8) bytes."""

    def wire_bytes(self, d: int) -> int:
        return 4 + bits.packed_bytes(d, 1)

    def _quantize(self, rows, keys):
        check_block(rows, keys)
        x = host(rows)
        scale = (np.abs(x).sum(axis=1, keepdims=True, dtype=np.float32) / np.float32(x.shape[1]))
        return scale.astype(np.float32), x < 0

    @staticmethod
    def _values(scale, negative):
        magnitude = np.empty(negative.shape, dtype=np.float32)
        magnitude[...] = scale
        return _signed(magnitude, negative)

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return tensor(self._values(*self._quantize(rows, keys)), rows.device)

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        scale, negative = self._quantize(rows, keys)
        return _assemble(scale, negative.view(np.uint8), 1)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        scale, codes = _disassemble(wire, d, 1)
        return tensor(self._values(scale, codes.astype(bool)), keys.device)
