"""Packing small unsigned codes into bytes, whole blocks at once (numpy).

Order: bit plane by bit plane. A row of d codes of `width` bits is the d most significant
bits (entry 0 first), then the d next bits, down to the d least significant bits; that string
of d * width bits is cut into bytes as numpy.packbits does (first bit in a byte's top bit, the
last byte padded with zeros): exactly ceil(d * width / 8) bytes. A loop runs over the bit
planes of a code (at most 32), never over rows or entries.
"""
from __future__ import annotations

import numpy as np

MAX_WIDTH = 32


def packed_bytes(d: int, width: int) -> int:
    """Bytes of d codes of `width` bits each: ceil(d * width / 8)."""
    return -(-d * width // 8)


def _check(width: int) -> None:
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"bits: a code is 1 to {MAX_WIDTH} bits wide, got {width}")


def pack(codes: np.ndarray, width: int) -> np.ndarray:
    """(k, d) unsigned integer codes in [0, 2**width) -> (k, packed_bytes(d, width)) uint8."""
    _check(width)
    k, d = codes.shape
    planes = np.empty((k, width, d), dtype=bool)
    for b in range(width):
        planes[:, b, :] = (codes >> (width - 1 - b)) & 1
    return np.packbits(planes.reshape(k, width * d), axis=1)


def unpack(packed: np.ndarray, d: int, width: int) -> np.ndarray:
    """The inverse of `pack`: (k, packed_bytes(d, width)) uint8 -> (k, d) uint32 codes."""
    _check(width)
    k = packed.shape[0]
    planes = np.unpackbits(packed, axis=1, count=width * d).reshape(k, width, d)
    codes = np.zeros((k, d), dtype=np.uint32)
    for b in range(width):
        codes <<= 1
        codes |= planes[:, b, :]
    return codes
