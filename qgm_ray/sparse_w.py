"""A mixing matrix W(t) stored by its nonzeros (compressed rows), numpy only.

Graphs that gossip have a few neighbours per client, so W has O(n) nonzeros, while the dense
n x n float64 array is 2.1 GB at n = 16,384, held in every process that plans or wires the
rounds (the driver, the Coordinator). The engines only ever read W row by row (whom the client
at graph position i mixes, with which weights) and column by column (who reads the payload of
position j): `SparseW` keeps exactly that.

The nonzeros of row i lie in increasing column order and a stored weight is never 0, so
walking a row gives exactly what `np.flatnonzero(dense[i])` gives (the order both engines sum
in, engine/base.py `block_mix`). `from_coo` adds repeated (i, j) entries in the order given,
starting from 0.0, which is what `dense[i, j] += w` does in that order: a graph built from
its nonzeros gives the same floats, bit for bit, as its dense definition.
"""
from __future__ import annotations

import weakref

import numpy as np


class SparseW:
    """n x n weights in compressed-row form: row i is cols[row_ptr[i]:row_ptr[i+1]] with
    weights[...] (columns increasing, no zeros). Read-only once built; `memo` holds what the
    engines derive from this matrix (wiring per block), so it lives and dies with it."""

    __slots__ = ("n", "row_ptr", "cols", "weights", "_col_ptr", "_col_rows", "memo", "__weakref__")

    def __init__(self, n: int, row_ptr: np.ndarray, cols: np.ndarray, weights: np.ndarray):
        self.n = int(n)
        self.row_ptr = np.asarray(row_ptr, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64)
        for a in (self.row_ptr, self.cols, self.weights):
            a.setflags(write=False)
        self._col_ptr = self._col_rows = None
        self.memo: dict = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_coo(cls, n: int, rows, cols, values) -> "SparseW":
        """Entries (rows[e], cols[e]) += values[e], in the order given; zeros dropped."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape).ravel()
        key = rows * n + cols
        order = np.argsort(key, kind="stable")          # stable: repeats keep the order given
        key, values = key[order], values[order]
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[1:] != key[:-1]
        slot = np.cumsum(first) - 1
        summed = np.zeros(int(first.sum()))
        np.add.at(summed, slot, values)                 # unbuffered, in index order: 0.0 + w1 + w2 ...
        key = key[first]
        keep = summed != 0
        key, summed = key[keep], summed[keep]
        r, c = np.divmod(key, n)
        return cls(n, np.searchsorted(r, np.arange(n + 1)), c, summed)

    @classmethod
    def from_dense(cls, W: np.ndarray) -> "SparseW":
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            raise ValueError(f"a mixing matrix is n x n, got shape {W.shape}")
        rows, cols = np.nonzero(W)                       # row-major: by row, then column
        return cls(W.shape[0], np.searchsorted(rows, np.arange(W.shape[0] + 1)), cols, W[rows, cols])

    @classmethod
    def of(cls, W) -> "SparseW":
        return W if isinstance(W, SparseW) else cls.from_dense(W)

    # -- reading ------------------------------------------------------------------------------

    @property
    def nnz(self) -> int:
        return len(self.cols)

    def coo_rows(self) -> np.ndarray:
        """Row index of every stored entry (aligned with cols / weights)."""
        return np.repeat(np.arange(self.n), np.diff(self.row_ptr))

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns, weights) of row i: the graph positions whose payloads position i mixes, increasing."""
        a, b = self.row_ptr[i], self.row_ptr[i + 1]
        return self.cols[a:b], self.weights[a:b]

    def col(self, j: int) -> np.ndarray:
        """Rows with a nonzero in column j (the graph positions that read j's payload), increasing."""
        if self._col_ptr is None:
            rows = self.coo_rows()
            by_col = np.lexsort((rows, self.cols))
            self._col_rows = rows[by_col]
            self._col_ptr = np.searchsorted(self.cols[by_col], np.arange(self.n + 1))
        return self._col_rows[self._col_ptr[j]:self._col_ptr[j + 1]]

    def off_diagonal_nnz(self) -> int:
        """Links i -> j with i != j: the sum of the out-degrees (payloads sent in a round)."""
        return int(np.count_nonzero(self.coo_rows() != self.cols))

    def col_sums(self) -> np.ndarray:
        return np.bincount(self.cols, weights=self.weights, minlength=self.n)

    def toarray(self) -> np.ndarray:
        """The dense n x n array (O(n^2) memory: for small n, tests and eigenvalues)."""
        W = np.zeros((self.n, self.n))
        W[self.coo_rows(), self.cols] = self.weights
        return W

    # -- new matrices -------------------------------------------------------------------------

    def lazy(self) -> "SparseW":
        """(I + W) / 2, entry by entry as the dense expression computes it."""
        rows = self.coo_rows()
        diag = rows == self.cols
        values = np.where(diag, 1.0 + self.weights, self.weights) / 2
        missing = np.setdiff1d(np.arange(self.n), rows[diag])
        return SparseW.from_coo(self.n, np.concatenate([rows, missing]), np.concatenate([self.cols, missing]),
                                np.concatenate([values, np.full(len(missing), 0.5)]))

    def relabelled(self, perm: np.ndarray) -> "SparseW":
        """W' with W'[perm[a], perm[b]] = W[a, b]: the same graph, node a renamed perm[a]."""
        perm = np.asarray(perm)
        return SparseW.from_coo(self.n, perm[self.coo_rows()], perm[self.cols], self.weights)

    def column_normalised(self) -> "SparseW":
        """Each column divided by its sum (counts of links -> a column-stochastic W)."""
        return SparseW(self.n, self.row_ptr, self.cols, self.weights / self.col_sums()[self.cols])

    def __repr__(self) -> str:
        return f"SparseW(n={self.n}, nnz={self.nnz})"


_FROM_DENSE: dict = {}


def as_sparse(W) -> SparseW:
    """W as a SparseW. A dense array (tests, a caller holding one) is converted once and cached
    by the array object, through a weak reference: the cache never keeps a dense W alive and
    a reused id of a freed array is not mistaken for it."""
    if isinstance(W, SparseW):
        return W
    hit = _FROM_DENSE.get(id(W))
    if hit is None or hit[0]() is not W:
        if len(_FROM_DENSE) >= 32:
            _FROM_DENSE.clear()
        hit = _FROM_DENSE[id(W)] = (weakref.ref(W), SparseW.from_dense(W))
    return hit[1]
