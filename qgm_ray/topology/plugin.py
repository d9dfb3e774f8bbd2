"""Plug-in graphs: a `"package.module:function"` reference, `function(n, **options)` returning a
networkx Graph (Metropolis-Hastings weights, as `social`), a DiGraph (column stochastic,
push-sum) or an n x n W (checked doubly stochastic, or column stochastic with `directed:
true`), built once per (n, seed, options) and checked: one line naming topology.name for
whatever does not fit."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from qgm_ray import errors, plugins
from qgm_ray.errors import ConfigError
from qgm_ray.sparse_w import SparseW
from qgm_ray.topology import directed
from qgm_ray.topology.graphs import _simple, _simple_directed, mixing_matrix_from_graph
from qgm_ray.topology.names import _TV_CACHE_ROUNDS

# Options qgm-ray reads itself; every other option goes to the user's function.
PLUGIN_OWN_OPTIONS = ("directed", "lazy")
_PLUGIN_CACHE: OrderedDict = OrderedDict()


def _options_key(options: dict) -> str:
    return repr(sorted((k, repr(v)) for k, v in options.items()))


def plugin_graph(name: str, n: int, seed: int, options: dict) -> tuple[np.ndarray | SparseW, bool]:
    """(W, directed) of the plug-in graph `name` on n clients, checked: one line naming
    topology.name for a wrong kind of object, a wrong size, a disconnected graph or a W that
    is not stochastic. Cached per (name, n, seed, options) in this process."""
    key = (name, n, seed, _options_key(options))
    if key in _PLUGIN_CACHE:
        _PLUGIN_CACHE.move_to_end(key)
        return _PLUGIN_CACHE[key]
    result = _build_plugin_graph(name, n, seed, options)
    _PLUGIN_CACHE[key] = result
    if len(_PLUGIN_CACHE) > _TV_CACHE_ROUNDS:
        _PLUGIN_CACHE.popitem(last=False)
    return result


def _build_plugin_graph(name: str, n: int, seed: int, options: dict) -> tuple[np.ndarray | SparseW, bool]:
    import networkx as nx
    fn = plugins.resolve("topology", name)
    where = f"topology.name={name!r}"
    if not callable(fn):
        raise ConfigError(f"{where} is a {type(fn).__name__}, not a function n -> graph")
    own = {k: v for k, v in options.items() if k not in PLUGIN_OWN_OPTIONS}
    plugins.check_options("topology", name, fn, 1, own, reserved=PLUGIN_OWN_OPTIONS)
    names, _ = plugins.signature_options(fn, 1)
    if "seed" in names:   # a random graph follows the run's seed (topology.options.seed is refused)
        own["seed"] = seed
    want_directed = bool(options.get("directed"))
    try:
        out = fn(n, **own)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
        raise ConfigError(f"{where} with n={n}: {errors.described(e)}") from None
    if isinstance(out, nx.Graph):
        directed_graph = out.is_directed() or want_directed
        G = _simple_directed(out) if directed_graph else _simple(out)
        if G.number_of_nodes() != n:
            raise ConfigError(f"{where} returned a graph with {G.number_of_nodes()} nodes for "
                              f"topology.n_clients={n}")
        if directed_graph:
            if n > 1 and not nx.is_strongly_connected(G):
                raise ConfigError(f"{where} returned a directed graph on {n} nodes that is not strongly "
                                  "connected: push-sum gossip needs a path from every client to every other")
            return directed.directed_weights(G), True
        if n > 1 and not nx.is_connected(G):
            raise ConfigError(f"{where} returned a disconnected graph on {n} nodes "
                              f"({nx.number_connected_components(G)} components): gossip needs a connected graph")
        return mixing_matrix_from_graph(G), False
    if not isinstance(out, np.ndarray):
        raise ConfigError(f"{where} returned a {type(out).__name__}; expected a networkx Graph or DiGraph, "
                          f"or an n x n numpy array W")
    W = np.asarray(out, dtype=np.float64)
    if W.shape != (n, n) or not np.all(np.isfinite(W)) or (W < 0).any():
        raise ConfigError(f"{where} returned an array of shape {W.shape}; expected an {n} x {n} W of finite "
                          f"non-negative weights (topology.n_clients={n})")
    tol = 1e-9 * max(1, n)
    cols = np.abs(W.sum(axis=0) - 1).max()
    rows = np.abs(W.sum(axis=1) - 1).max()
    if want_directed:
        if cols > tol:
            raise ConfigError(f"{where} returned a W whose columns do not sum to 1 (off by {cols:.3g}); "
                              f"with topology.options.directed=true W must be column stochastic")
    elif cols > tol or rows > tol:
        raise ConfigError(f"{where} returned a W that is not doubly stochastic (rows off by {rows:.3g}, "
                          f"columns by {cols:.3g}); set topology.options.directed=true for a column-stochastic "
                          f"W (gossiped with push-sum)")
    links = (W > 0).astype(float)
    if n > 1 and not directed.strongly_connected(links):
        raise ConfigError(f"{where} returned a W whose graph is not {'strongly ' if want_directed else ''}connected: "
                          "gossip needs a path from every client to every other")
    return W, want_directed
