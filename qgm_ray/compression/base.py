"""The Compressor interface, the wire helpers the built-ins share, and `none`.

A compressor is a pure function of (rows, keys): no state, no RNG of its own. Its randomness
comes from the keys (`stream.py`), so what a sender compresses the receiver can regenerate.
The built-ins compute on the host with numpy whatever the rows' device (the wire is a numpy
array anyway), and return q on the rows' (compress) or the keys' (decode) device.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def kept_entries(d: int, keep: float) -> int:
    """m = max(1, floor(d * keep)) entries of a row of d, as the official code's
    max(1, int(d * (1 - compress_ratio))). d * keep is rounded to 6 decimals first, so that
    0.1 of 5000 is 500 and not a float's 499.99999999999994."""
    return max(1, min(d, math.floor(round(d * keep, 6))))


def index_bytes(d: int) -> int:
    """Bytes of one entry index on the wire: uint16 when every index fits (d <= 65536), else uint32."""
    return 2 if d <= 2 ** 16 else 4


def check_block(rows: torch.Tensor, keys: torch.Tensor) -> None:
    if rows.dim() != 2 or rows.dtype != torch.float32:
        raise ValueError(f"compress: rows must be a (k, d) float32 tensor, got {tuple(rows.shape)} {rows.dtype}")
    if keys.shape != (rows.shape[0],):
        raise ValueError(f"compress: keys must be ({rows.shape[0]},), one per row, got {tuple(keys.shape)}")


def check_wire(wire: np.ndarray, keys: torch.Tensor, expected: int) -> None:
    if not isinstance(wire, np.ndarray) or wire.dtype != np.uint8 or wire.ndim != 2 or wire.shape[1] != expected:
        shape = (wire.shape, wire.dtype) if isinstance(wire, np.ndarray) else type(wire).__name__
        raise ValueError(f"decode: the wire must be an (r, {expected}) uint8 array, got {shape}")
    if keys.shape != (wire.shape[0],):
        raise ValueError(f"decode: keys must be ({wire.shape[0]},), one per wire row, got {tuple(keys.shape)}")


class Compressor:
    """Compress a block's (k, d) float32 rows, one stream key per row (the package's docstring
    holds the contract). A subclass implements `wire_bytes`, `encode` and `decode`; `compress`
    defaults to decoding the encoded rows, which is right by construction, and a subclass
    overrides it only to skip the bytes (the built-ins do)."""

    name: str = ""

    def wire_bytes(self, d: int) -> int:
        raise NotImplementedError

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        raise NotImplementedError

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(rows, keys), keys.to(rows.device), rows.shape[1]).to(rows.device)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "name")
        return f"{type(self).__name__}({options})"


def host(rows: torch.Tensor) -> np.ndarray:
    """A block's rows as a numpy array (no copy for a CPU tensor): the built-ins compute on
    the host, where numpy reuses its memory and wraps uint32 products."""
    return rows.detach().cpu().numpy()


def tensor(array: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(array).to(device)


def floats_to_wire(values: np.ndarray) -> np.ndarray:
    """(k, m) float32 -> (k, 4m) uint8, little-endian, every bit kept (-0.0 and NaN included)."""
    return np.ascontiguousarray(values, dtype="<f4").view(np.uint8)


def wire_to_floats(wire: np.ndarray) -> np.ndarray:
    """(r, 4m) uint8 -> (r, m) float32, a copy (a received wire may be read-only)."""
    return np.ascontiguousarray(wire).view("<f4").astype(np.float32, copy=True)


class NoCompression(Compressor):
    """`none`: q = x; the wire is the d float32 values."""

    def wire_bytes(self, d: int) -> int:
        return 4 * d

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        check_block(rows, keys)
        return tensor(host(rows).copy(), rows.device)

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        check_block(rows, keys)
        return floats_to_wire(host(rows).copy())   # a wire of its own, not a view of the rows

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        return tensor(wire_to_floats(wire), keys.device)
