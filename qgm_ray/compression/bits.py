"""Packing small unsigned codes into bytes, on any device, whole blocks at once.

Order (as numpy.packbits): a row's codes one after the other, each code's bits from the most
significant down, eight bits to a byte with the first bit in the byte's top bit; the last
byte of a row is padded with zeros. A loop runs over the bits of one code (at most 32) and
the eight bits of a byte, never over rows or entries.
"""
from __future__ import annotations

import torch


def packed_bytes(d: int, width: int) -> int:
    """Bytes of d codes of `width` bits each: ceil(d * width / 8)."""
    return -(-d * width // 8)


def pack(codes: torch.Tensor, width: int) -> torch.Tensor:
    """(k, d) int64 codes in [0, 2**width) -> (k, packed_bytes(d, width)) uint8."""
    k, d = codes.shape
    planes = torch.empty(k, d, width, dtype=torch.uint8, device=codes.device)
    for b in range(width):
        planes[:, :, b] = (codes >> (width - 1 - b)) & 1
    n = packed_bytes(d, width)
    flat = torch.zeros(k, n * 8, dtype=torch.uint8, device=codes.device)
    flat[:, :d * width] = planes.reshape(k, d * width)
    flat = flat.reshape(k, n, 8)
    out = torch.zeros(k, n, dtype=torch.uint8, device=codes.device)
    for b in range(8):
        out |= flat[:, :, b] << (7 - b)
    return out


def unpack(packed: torch.Tensor, d: int, width: int) -> torch.Tensor:
    """The inverse of `pack`: (k, packed_bytes(d, width)) uint8 -> (k, d) int64."""
    k = packed.shape[0]
    flat = torch.empty(k, packed.shape[1], 8, dtype=torch.uint8, device=packed.device)
    for b in range(8):
        flat[:, :, b] = (packed >> (7 - b)) & 1
    planes = flat.reshape(k, -1)[:, :d * width].reshape(k, d, width)
    codes = torch.zeros(k, d, dtype=torch.int64, device=packed.device)
    for b in range(width):
        codes |= planes[:, :, b].to(torch.int64) << (width - 1 - b)
    return codes
