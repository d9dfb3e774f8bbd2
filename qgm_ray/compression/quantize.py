"""Quantizers: `qsgd` (s levels, stochastic rounding, one norm per row) and `sign` (scaled
sign, one scale per row). Both send one float32 per row, then packed codes.

The receiver rebuilds q from the transmitted float32 and integer codes with the same
elementwise expression the sender used; each operation is IEEE-rounded on every device, so
q is the same bits on both sides.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from qgm_ray.compression import bits
from qgm_ray.compression.base import Compressor, check_block, check_levels, check_unbiased, check_wire, floats_to_wire, wire_to_floats
from qgm_ray.compression.stream import uniforms


def level_bits(levels: int) -> int:
    """Bits of one level in [0, s]: ceil(log2(s + 1))."""
    return max(1, levels.bit_length())


def _assemble(scale: torch.Tensor, codes: torch.Tensor, width: int) -> np.ndarray:
    packed = bits.pack(codes, width).cpu().numpy()
    return np.concatenate([floats_to_wire(scale.reshape(-1, 1)), packed], axis=1)


def _disassemble(wire: np.ndarray, d: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    scale = wire_to_floats(wire[:, :4], device)                    # (r, 1)
    packed = torch.from_numpy(np.ascontiguousarray(wire[:, 4:])).to(device)
    return scale, bits.unpack(packed, d, width)


class QSGD(Compressor):
    """`qsgd` (Alistarh et al.): per row the norm ||x||_2 and, per entry, the sign and a level
    l_i in [0, s]: s |x_i| / ||x|| rounded down or up at random, up with probability its
    fractional part (a uniform from the row's stream), so E[l_i] = s |x_i| / ||x|| and
    q = ||x|| sign(x_i) l_i / s is unbiased. With `unbiased: false` q is scaled by
    1 / (1 + min(d / s^2, sqrt(d) / s)), the official code's `is_biased` (a contraction, which
    CHOCO's analysis asks for); the scale travels folded into the row's float32.
    A row of zeros sends norm 0 and levels 0. Wire: the float32, then d codes of
    1 + ceil(log2(s + 1)) bits (the sign bit, set for x_i < 0, then the level), packed:
    4 + ceil(d (1 + ceil(log2(s + 1))) / 8) bytes."""

    def __init__(self, levels: int, unbiased: bool = True):
        self.levels = check_levels(levels)
        self.unbiased = check_unbiased(unbiased)

    def _width(self) -> int:
        return 1 + level_bits(self.levels)

    def wire_bytes(self, d: int) -> int:
        return 4 + bits.packed_bytes(d, self._width())

    def _quantize(self, rows, keys):
        """(k, 1) float32 scale, (k, d) bool negative, (k, d) int64 level."""
        check_block(rows, keys)
        k, d = rows.shape
        s = self.levels
        norm = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
        ratio = torch.where(norm > 0, rows.abs() * s / norm, torch.zeros((), device=rows.device))
        low = ratio.floor()
        up = uniforms(keys.to(rows.device), d) < (ratio - low)
        level = (low.to(torch.int64) + up).clamp_(0, s)
        scale = norm if self.unbiased else norm * (1.0 / (1.0 + min(d / s ** 2, math.sqrt(d) / s)))
        return scale, rows < 0, level

    def _values(self, scale, negative, level):
        magnitude = scale * level.to(torch.float32) / self.levels
        return torch.where(negative, -magnitude, magnitude)

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self._values(*self._quantize(rows, keys))

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        scale, negative, level = self._quantize(rows, keys)
        width = self._width()
        codes = (negative.to(torch.int64) << (width - 1)) | level
        return _assemble(scale, codes, width)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        width = self._width()
        scale, codes = _disassemble(wire, d, width, keys.device)
        negative = (codes >> (width - 1)).bool()
        return self._values(scale, negative, codes & ((1 << (width - 1)) - 1))


class ScaledSign(Compressor):
    """`sign`: q = (||x||_1 / d) sign(x), one scale per row (Karimireddy et al.'s scaled sign,
    as CHOCO-SGD's `sign`, which scales each parameter tensor; here the row is the message).
    sign(0) is +1, so one bit per entry suffices: the bit is set for x_i < 0 (-0.0 and NaN
    count as +). Wire: the float32 scale, then d bits packed: 4 + ceil(d / 8) bytes."""

    def wire_bytes(self, d: int) -> int:
        return 4 + bits.packed_bytes(d, 1)

    def _quantize(self, rows, keys):
        check_block(rows, keys)
        return rows.abs().sum(dim=1, keepdim=True) / rows.shape[1], rows < 0

    @staticmethod
    def _values(scale, negative):
        return torch.where(negative, -scale, scale)

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self._values(*self._quantize(rows, keys))

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        scale, negative = self._quantize(rows, keys)
        return _assemble(scale, negative.to(torch.int64), 1)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        scale, codes = _disassemble(wire, d, 1, keys.device)
        return self._values(scale, codes.bool())
