"""Sparsifiers: `top_k` (the m largest magnitudes) and `random_k` (m entries drawn from the
row's stream). Both send m = kept_entries(d, keep) entries per row.

Entry order on the wire is increasing index, whatever order the selection found them in, so a
row's wire depends only on the selected set.
"""
from __future__ import annotations

import numpy as np
import torch

from qgm_ray.compression.base import (Compressor, check_block, check_wire, floats_to_wire, host, index_bytes,
                                      kept_entries, tensor, wire_to_floats)
from qgm_ray.compression.options import check_keep, check_unbiased
from qgm_ray.compression.stream import entry_hashes


def smallest(order: np.ndarray, m: int) -> np.ndarray:
    """(k, m) int64, increasing: per row the indices of the m smallest values of `order`
    (no NaN), a tie going to the lower index, so the set is unique. The m-th smallest value
    comes from a partial sort; entries below it are in, and of those equal to it the first
    ones by index fill the row up to m."""
    k, d = order.shape
    if m == d:
        return np.broadcast_to(np.arange(d), (k, d)).copy()
    threshold = np.partition(order, m - 1, axis=1)[:, m - 1:m]
    chosen = order < threshold
    tied = order == threshold
    missing = m - np.count_nonzero(chosen, axis=1)
    if np.array_equal(np.count_nonzero(tied, axis=1), missing):   # no tie beyond the m-th
        chosen |= tied
    else:
        chosen |= tied & (np.cumsum(tied, axis=1) <= missing[:, None])
    flat = np.flatnonzero(chosen).reshape(k, m)   # row-major: each row's m, increasing
    flat -= (np.arange(k) * d)[:, None]
    return flat


def top_indices(x: np.ndarray, m: int) -> np.ndarray:
    """(k, m) int64, increasing: per row the m entries of largest |x|, a tie going to the
    lower index. A NaN counts as the smallest magnitude (sent only where fewer than m entries
    are numbers)."""
    order = np.abs(x)
    np.negative(order, out=order)
    if np.isnan(order).any():
        order[np.isnan(order)] = np.inf
    return smallest(order, m)


def drawn_indices(keys, d: int, m: int) -> np.ndarray:
    """(k, m) int64, increasing: per key m distinct entries of [0, d), uniformly without
    replacement: those of the m smallest keyed hashes (the index breaking a tie)."""
    return smallest(entry_hashes(keys, d), m)


def _dense(values: np.ndarray, indices: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros((values.shape[0], d), dtype=np.float32)
    np.put_along_axis(out, indices, values, axis=1)
    return out


def _index_dtype(d: int) -> str:
    return "<u2" if index_bytes(d) == 2 else "<u4"


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
        x = host(rows)
        indices = top_indices(x, kept_entries(x.shape[1], self.keep))
        return np.take_along_axis(x, indices, axis=1), indices

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        values, indices = self._select(rows, keys)
        return tensor(_dense(values, indices, rows.shape[1]), rows.device)

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        values, indices = self._select(rows, keys)
        index_wire = indices.astype(_index_dtype(rows.shape[1])).view(np.uint8)
        return np.concatenate([floats_to_wire(values), index_wire], axis=1)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        m = kept_entries(d, self.keep)
        indices = np.ascontiguousarray(wire[:, 4 * m:]).view(_index_dtype(d)).astype(np.int64)
        return tensor(_dense(wire_to_floats(wire[:, :4 * m]), indices, d), keys.device)


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
        x = host(rows)
        d = x.shape[1]
        m = kept_entries(d, self.keep)
        indices = drawn_indices(keys, d, m)
        values = np.take_along_axis(x, indices, axis=1)
        if self.unbiased:
            values *= np.float32(d / m)
        return values, indices

    def compress(self, rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        values, indices = self._select(rows, keys)
        return tensor(_dense(values, indices, rows.shape[1]), rows.device)

    def encode(self, rows: torch.Tensor, keys: torch.Tensor) -> np.ndarray:
        values, _ = self._select(rows, keys)
        return floats_to_wire(values)

    def decode(self, wire: np.ndarray, keys: torch.Tensor, d: int) -> torch.Tensor:
        check_wire(wire, keys, self.wire_bytes(d))
        indices = drawn_indices(keys, d, kept_entries(d, self.keep))
        return tensor(_dense(wire_to_floats(wire), indices, d), keys.device)
