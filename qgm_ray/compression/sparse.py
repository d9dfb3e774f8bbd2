"""Sparsifiers: `top_k` (the m largest magnitudes) and `random_k` (m entries drawn from the
row's stream). Both send m = kept_entries(d, keep) entries per row.

Entry order on the wire is increasing index, whatever order the selection found them in, so a
row's wire depends only on the selected set.
"""
from __future__ import annotations

import numpy as np
import torch

from qgm_ray.compression.base import (Compressor, check_block, check_keep, check_unbiased, check_wire,
                                      floats_to_wire, index_bytes, kept_entries, wire_to_floats)
from qgm_ray.compression.stream import entry_hashes

MAX_D = 2 ** 31   # an index and a 31-bit magnitude (or 32-bit hash) share one int64 sort key


def _index_bits(d: int) -> int:
    if d > MAX_D:
        raise ValueError(f"compress: rows of more than {MAX_D} entries are not supported, got {d}")
    return max(1, (d - 1).bit_length())


def top_indices(rows: torch.Tensor, m: int) -> torch.Tensor:
    """(k, m) int64, increasing: per row the m entries of largest |x|, a tie going to the lower
    index. The sort key packs |x|'s float32 bits (ordered like |x| for non-negative floats)
    above the complemented index, so every key is distinct and the chosen set is unique
    whatever order torch.topk works in."""
    d = rows.shape[1]
    shift = _index_bits(d)
    magnitude = rows.abs().contiguous().view(torch.int32).to(torch.int64)
    lower_first = (d - 1) - torch.arange(d, dtype=torch.int64, device=rows.device)
    order = (magnitude << shift) | lower_first
    return order.topk(m, dim=1, sorted=False).indices.sort(dim=1).values


def drawn_indices(keys: torch.Tensor, d: int, m: int) -> torch.Tensor:
    """(k, m) int64, increasing: per key m distinct entries of [0, d), uniformly without
    replacement (the m smallest of d keyed hashes, the index breaking ties), on keys' device."""
    shift = _index_bits(d)
    order = (entry_hashes(keys, d) << shift) | torch.arange(d, dtype=torch.int64, device=keys.device)
    return order.topk(m, dim=1, largest=False, sorted=False).indices.sort(dim=1).values


def _scatter(values: torch.Tensor, indices: torch.Tensor, d: int) -> torch.Tensor:
    out = torch.zeros(values.shape[0], d, dtype=torch.float32, device=values.device)
    return out.scatter_(1, indices, values)


def _indices_to_wire(indices: torch.Tensor, d: int) -> np.ndarray:
    dtype = "<u2" if index_bytes(d) == 2 else "<u4"
    return np.ascontiguousarray(indices.cpu().numpy().astype(dtype)).view(np.uint8)


def _wire_to_indices(wire: np.ndarray, d: int, device) -> torch.Tensor:
    dtype = "<u2" if index_bytes(d) == 2 else "<u4"
    return torch.from_numpy(np.ascontiguousarray(wire).view(dtype).astype(np.int64)).to(device)


class TopK(Compressor):
    """`top_k`: the m = max(1, floor(d * keep)) entries of largest magnitude, the rest zero
    (biased). Wire: m float32 values, then their m indices as uint16 (d <= 65536) or uint32,
    little-endian: 4m + 2m or 4m + 4m bytes."""

    def __init__(self, keep: float):
        self.keep = check_keep(keep)

    def wire_bytes(self, d: int) -> int:
        m = kept_entries(d, self.keep)
        return 4 * m + index_bytes(d) * m

    def _select(self, rows, keys):
        check_block(rows, keys)
        indices = top_indices(rows, kept_entries(rows.shape[1], self.keep))
        return rows.gather(1, indices), indices

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        values, indices = self._select(rows, keys)
        return _scatter(values, indices, rows.shape[1])

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        values, indices = self._select(rows, keys)
        return np.concatenate([floats_to_wire(values), _indices_to_wire(indices, rows.shape[1])], axis=1)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        m = kept_entries(d, self.keep)
        values = wire_to_floats(wire[:, :4 * m], keys.device)
        return _scatter(values, _wire_to_indices(wire[:, 4 * m:], d, keys.device), d)


class RandomK(Compressor):
    """`random_k`: m = max(1, floor(d * keep)) entries drawn without replacement from the row's
    stream; with `unbiased` their values are scaled by d / m (so E[q] = x), else sent as they
    are (biased, as CHOCO-SGD's random-k). The receiver draws the same indices from the key, so
    the wire is the m float32 values only: 4m bytes."""

    def __init__(self, keep: float, unbiased: bool = False):
        self.keep = check_keep(keep)
        self.unbiased = check_unbiased(unbiased)

    def wire_bytes(self, d: int) -> int:
        return 4 * kept_entries(d, self.keep)

    def _select(self, rows, keys):
        check_block(rows, keys)
        d = rows.shape[1]
        m = kept_entries(d, self.keep)
        indices = drawn_indices(keys.to(rows.device), d, m)
        values = rows.gather(1, indices)
        if self.unbiased:
            values = values * (d / m)
        return values, indices

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        values, indices = self._select(rows, keys)
        return _scatter(values, indices, rows.shape[1])

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        values, _ = self._select(rows, keys)
        return floats_to_wire(values)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        indices = drawn_indices(keys, d, kept_entries(d, self.keep))
        return _scatter(wire_to_floats(wire, keys.device), indices, d)
