"""The Topology object the engines hold: W(t) of one named graph on n clients, built through
the registry, kept by its nonzeros and cached (a static graph's one matrix, a time-varying
graph's recent rounds), with its neighbours, spectral gap and the run's one-line description."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from qgm_ray import plugins
from qgm_ray.sparse_w import SparseW
from qgm_ray.topology.graphs import _exponential_period, _torus_shape
from qgm_ray.topology.names import (
    _TV_CACHE_ROUNDS,
    DEFAULT_SOCIAL_GRAPH,
    DESCRIBE_GAP_MAX_N,
    RANDOM_PEER_DEGREE,
    TIME_VARYING,
)
from qgm_ray.topology.plugin import PLUGIN_OWN_OPTIONS, plugin_graph
from qgm_ray.topology.validate import _check_kwargs, is_directed, validate_topology


class Topology:
    """W(t) for one named graph on n clients. Build it with make_topology().

    Plain data (name, n, seed, options) plus caches, so it pickles with the standard pickle
    module; a static graph computes its matrix once, a time-varying one keeps recent rounds.
    """

    def __init__(self, name: str, n: int, seed: int = 0, **kw):
        validate_topology(name, n, seed, **kw)
        self.name = name
        self.n = int(n)
        self.seed = int(seed)
        self.plugin = plugins.is_reference(name)
        self.options = {k: v for k, v in kw.items() if v is not None} if self.plugin else _check_kwargs(kw)
        self.time_varying = name in TIME_VARYING
        # Column-stochastic W: the engines gossip with push-sum weights (engine/push_sum.py).
        self.directed = is_directed(name, self.options, self.n, self.seed)
        self._cache: OrderedDict[int, SparseW] = OrderedDict()
        self._gap_cache: dict[int, float] = {}
        if name in ("social", "graph", "random_peer") or self.plugin:
            self.sparse(0)  # build now: errors surface at construction, and the graph is not kept

    def _build(self, t: int):
        if self.plugin:
            return plugin_graph(self.name, self.n, self.seed, self.options)[0]
        return plugins.resolve("topology", self.name)(self.n, t, self.seed, self.options)

    def _key(self, t: int) -> int:
        return int(t) if self.time_varying else 0

    def sparse(self, t: int = 0) -> SparseW:
        """W(t) by its nonzeros (qgm_ray/sparse_w.py): what the engines read. Cached (a static
        graph's one matrix, a time-varying graph's recent rounds), so it is built once and the
        engines' per-matrix memo (wiring per block) is kept with it."""
        key = self._key(t)
        W = self._cache.get(key)
        if W is None:
            W = SparseW.of(self._build(key))
            if self.options.get("lazy"):
                # (I + W) / 2: eigenvalues move from [-1, 1] to [0, 1]. D2 needs lambda_min > -1/3
                # and gradient tracking diverges on the social graph (lambda_min -0.434) without it
                # (docs/results/table1); the price is half the mixing per round.
                W = W.lazy()
            self._cache[key] = W
            if len(self._cache) > _TV_CACHE_ROUNDS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return W

    def matrix(self, t: int = 0) -> np.ndarray:
        """W(t) as a dense float64 n x n array, read-only: O(n^2) memory (2.1 GB at n = 16,384),
        for inspection, tests and eigenvalues; the engines use `sparse(t)`."""
        W = self.sparse(t).toarray()
        W.setflags(write=False)
        return W

    def in_neighbors(self, i: int, t: int = 0) -> list[int]:
        """Graph positions j != i whose payload position i mixes in round t (W[i, j] != 0), sorted."""
        return [int(j) for j in self.sparse(t).row(i)[0] if j != i]

    def out_degree(self, i: int, t: int = 0) -> int:
        """Number of graph positions j != i that receive position i's payload in round t (W[j, i] != 0)."""
        readers = self.sparse(t).col(i)
        return int(len(readers) - np.count_nonzero(readers == i))

    def spectral_gap(self, t: int = 0) -> float:
        """1 - max(|lambda_2|, |lambda_n|): one minus the largest eigenvalue modulus after the 1."""
        key = self._key(t)
        if key not in self._gap_cache:
            W = self.matrix(t)
            ev = np.linalg.eigvalsh(W) if np.allclose(W, W.T) else np.linalg.eigvals(W)
            mod = np.sort(np.abs(ev))[::-1]
            gap = 1.0 - float(mod[1]) if len(mod) > 1 else 1.0
            self._gap_cache[key] = max(0.0, gap)  # clip -1e-16 noise of disconnected rounds
        return self._gap_cache[key]

    def describe(self) -> str:
        kw = self.options
        if self.name == "torus":
            extra = ", {}x{}".format(*_torus_shape(self.n))
        elif self.name == "social":
            extra = f", graph={kw.get('graph', DEFAULT_SOCIAL_GRAPH)}"
        elif self.name == "graph":
            extra = f", edge_list={kw['edge_list']}" if "edge_list" in kw else f", generator={kw['generator']}"
        elif self.plugin:
            own = {k: v for k, v in kw.items() if k not in PLUGIN_OWN_OPTIONS}
            extra = "".join(f", {k}={v}" for k, v in own.items())
        elif self.name == "time_varying_exponential":
            extra = f", period={_exponential_period(self.n)}"
        elif self.name == "random_peer":
            extra = f", degree={kw.get('degree', RANDOM_PEER_DEGREE)}"
        else:
            extra = ""
        if self.directed:
            extra += ", directed, push-sum"
        if self.options.get("lazy"):
            extra += ", lazy (I+W)/2"
        if self.time_varying:
            return f"{self.name}(n={self.n}{extra}, time-varying, seed={self.seed})"
        if self.n > DESCRIBE_GAP_MAX_N:   # O(n^3): longer than the whole start-up at that size (docs/results/scale)
            return f"{self.name}(n={self.n}{extra}, spectral gap not computed above n={DESCRIBE_GAP_MAX_N})"
        return f"{self.name}(n={self.n}{extra}, spectral_gap={self.spectral_gap():.4f})"

    def __repr__(self) -> str:
        return f"Topology({self.name!r}, n={self.n}, seed={self.seed})"
