"""Communication graphs -> mixing matrices W(t).

Indices of W are graph positions: row i of W(t) holds the weights the client at graph position
i applies to what it receives in round t (which data shard, or client slot, sits at a position
is the engines' business, not the graph's). Undirected
graphs are symmetric and doubly stochastic; directed ones (`DIRECTED`, `graph` with
`directed: true`) are column stochastic, W[j, i] != 0 meaning "i sends to j", and engines
gossip on them with push-sum (engine/push_sum.py). Static graphs compute W once;
time-varying graphs rebuild it from (seed, t), so any process asking for round t gets the
same matrix without sharing state.

Every name is a builder `(n, t, seed, options) -> W` registered in `qgm_ray.plugins`; a
`"package.module:function"` reference is a user's graph, `function(n, **options)` returning a
networkx Graph (Metropolis-Hastings weights, as `social`), a DiGraph (column stochastic,
push-sum, as directed `graph`) or an n x n W (checked doubly stochastic, or column stochastic
with `directed: true`); it is static (built once per n).

Weights follow the official QGM code (github.com/epfml/quasi-global-momentum,
pcode/utils/topology.py) unless a comment says why they differ.
"""

from __future__ import annotations

import inspect
import math
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Optional

import numpy as np

from qgm_ray import directed, errors, plugins
from qgm_ray.errors import ConfigError
from qgm_ray.sparse_w import SparseW

# networkx is imported where a graph is built: validating a config of a built-in graph
# reads only the tables below.
if TYPE_CHECKING:
    import networkx as nx

TOPOLOGIES = (
    "complete",
    "ring",
    "torus",
    "ring_ext",
    "expander",
    "social",
    "time_varying_exponential",
    "time_varying_random_ring",
    "time_varying_random_pair",
    "margulis",
    "bipartite_one_peer",
    "one_peer_exponential",
    "two_peer_exponential",
    "random_peer",
    "graph",
)
TIME_VARYING = ("time_varying_exponential", "time_varying_random_ring", "time_varying_random_pair",
                "bipartite_one_peer", "one_peer_exponential", "two_peer_exponential", "random_peer")
# Column- (not row-) stochastic: gossip needs push-sum. `graph` joins them with `directed: true`.
DIRECTED = ("one_peer_exponential", "two_peer_exponential", "random_peer")
# random_peer: out-links per round drawn from 1..degree. 3 draws a strongly connected round in
# a few tries at n = 16, where 2 needs about ten times as many and 1 succeeds only when the
# draw happens to be a single cycle (docs/results/push_sum/README.md).
RANDOM_PEER_DEGREE = 3

# name -> (networkx constructor's name, number of nodes)
SOCIAL_GRAPHS = {
    "davis_southern_women": ("davis_southern_women_graph", 32),
    "florentine_families": ("florentine_families_graph", 15),
    "karate_club": ("karate_club_graph", 34),
    "les_miserables": ("les_miserables_graph", 77),
}
DEFAULT_SOCIAL_GRAPH = "davis_southern_women"

_KWARGS = ("graph", "edge_list", "generator", "generator_kwargs", "directed", "degree", "lazy")
# Which graphs read which of them (besides `lazy`, read by all).
_OPTIONS = {
    "social": ("graph",),
    "graph": ("edge_list", "generator", "generator_kwargs", "directed"),
    "random_peer": ("degree",),
}
# describe() (the run's first log line) reports the spectral gap only up to this many clients.
DESCRIBE_GAP_MAX_N = 2048
_TV_CACHE_ROUNDS = 16  # time-varying: keep a few recent rounds (pipelined engines ask ahead)


# ---------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------


def mixing_matrix_from_graph(G: nx.Graph) -> np.ndarray:
    """Metropolis-Hastings weights of an undirected graph on nodes 0..n-1.

    w_ij = 1 / (1 + max(deg_i, deg_j)) on edges, w_ii = 1 - sum_j w_ij. This is what the
    official code's SocialNetworkGraph computes (its loop over nodes by falling degree assigns
    each edge the weight of the higher-degree end). Edge attributes and self-loops are ignored.
    """
    n = G.number_of_nodes()
    if sorted(G.nodes) != list(range(n)):
        raise ValueError("mixing_matrix_from_graph needs nodes labelled 0..n-1")
    W = np.zeros((n, n))
    deg = {v: sum(1 for u in G.neighbors(v) if u != v) for v in G.nodes}
    for i, j in G.edges():
        if i != j:
            W[i, j] = W[j, i] = 1.0 / (1.0 + max(deg[i], deg[j]))
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    return W


def _circulant(n: int, offsets: dict[int, float]) -> SparseW:
    """W[i, (i + o) % n] += w for each offset o, in the dict's order: the ring-like graphs."""
    idx = np.arange(n)
    rows = np.concatenate([idx] * len(offsets))
    cols = np.concatenate([(idx + o) % n for o in offsets])
    return SparseW.from_coo(n, rows, cols, np.repeat(list(offsets.values()), n))


def _ring(n: int) -> SparseW:
    if n == 1:
        return SparseW.from_dense(np.ones((1, 1)))
    if n == 2:
        return SparseW.from_dense(np.full((2, 2), 0.5))
    return _circulant(n, {-1: 1 / 3, 0: 1 / 3, 1: 1 / 3})


def _complete(n: int) -> np.ndarray:
    # Dense by nature (n^2 nonzeros). The engines never build it: `complete` (not lazy) runs
    # the exact all-reduce of engine/allreduce.py, which needs no W.
    return np.full((n, n), 1.0 / n)


def _torus_shape(n: int) -> tuple[int, int] | None:
    r = math.isqrt(n)
    if r >= 3 and n % r == 0 and n // r - r <= 1:
        return r, n // r
    return None


def _torus(n: int) -> SparseW:
    # r, c >= 3 so the 4 grid neighbours are distinct and every weight (self included) is 1/5.
    # Node (a, b) of the r x c grid is a * c + b (networkx's grid_2d_graph nodes, sorted).
    r, c = _torus_shape(n)
    a, b = np.divmod(np.arange(n), c)
    cols = [a * c + b] + [((a + da) % r) * c + (b + db) % c for da, db in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    return SparseW.from_coo(n, np.tile(np.arange(n), 5), np.concatenate(cols), 1.0 / 5.0)


def _ring_ext(n: int) -> SparseW:
    # n >= 4 even: the opposite node is never a ring neighbour, so each row has 4 entries of 1/4.
    return _circulant(n, {-1: 0.25, 0: 0.25, 1: 0.25, n // 2: 0.25})


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _expander(n: int) -> SparseW:
    """Cycle plus the chord i -- i^-1 (mod n), weight 1/3 per neighbour.

    The official code writes 1/3 into W[i, i-1], W[i, i+1], W[i, inv(i)] (and W[0, 0]), giving a
    zero diagonal for most nodes. That is doubly stochastic except where the chord duplicates
    a ring edge (inv(i) = i +- 1, which happens for n = 5, 11, 19, 29, 31, ...): those rows sum
    to 2/3. We therefore put 1/3 on every *distinct* neighbour and complete the diagonal
    Metropolis-Hastings style, w_ii = 1 - sum_j w_ij (max-degree weights with d_max = 3). W stays
    symmetric and doubly stochastic and equals the official matrix wherever that one is; nodes
    0, 1, n-1 (no chord, or inv(i) == i) get self-weight 1/3 exactly as in the official code.
    """
    if n <= 3:  # the "expander" is the ring (complete graph) itself
        return _ring(n)
    idx = np.arange(n)
    chord = np.array([0] + [pow(i, -1, n) for i in range(1, n)])   # node 0 has no chord (as officially)
    # Each distinct neighbour once (a chord on a ring edge is the same edge), weight 1/3; the
    # row's off-diagonal weights are equal, so their sum does not depend on the summing order.
    links = np.unique(np.concatenate([idx * n + (idx - 1) % n, idx * n + (idx + 1) % n,
                                      (idx * n + chord)[chord != idx]]))
    rows, cols = np.divmod(links, n)
    diag = 1.0 - np.bincount(rows, weights=np.full(len(rows), 1 / 3), minlength=n)
    return SparseW.from_coo(n, np.concatenate([rows, idx]), np.concatenate([cols, idx]),
                            np.concatenate([np.full(len(rows), 1 / 3), diag]))


def _simple(G: nx.Graph) -> nx.Graph:
    """Undirected, unweighted, no self-loops, nodes 0..m-1 in G's node (insertion) order."""
    import networkx as nx
    index = {v: k for k, v in enumerate(G.nodes)}
    H = nx.Graph()
    H.add_nodes_from(range(len(index)))
    H.add_edges_from((index[u], index[v]) for u, v in G.edges() if u != v)
    return H


def _simple_directed(G: nx.Graph) -> nx.DiGraph:
    """Directed, unweighted, no self-loops, nodes 0..m-1 in G's node order."""
    import networkx as nx
    index = {v: k for k, v in enumerate(G.nodes)}
    H = nx.DiGraph()
    H.add_nodes_from(range(len(index)))
    H.add_edges_from((index[u], index[v]) for u, v in G.to_directed().edges() if u != v)
    return H


def _social_graph(name: str) -> nx.Graph:
    # Unweighted (karate_club / les_miserables carry edge weights in recent networkx); nodes
    # numbered in the constructor's insertion order, the order the official code's
    # networkx.adjacency_matrix(graph) uses.
    import networkx as nx
    return _simple(getattr(nx, SOCIAL_GRAPHS[name][0])())


def _exponential_period(n: int) -> int:
    return int(math.floor(math.log2(n - 1))) + 1 if n > 2 else 1


def _time_varying_exponential(n: int, t: int) -> SparseW:
    if n == 1:
        return _ring(1)
    hop = 2 ** (t % _exponential_period(n))
    if (2 * hop) % n == 0:  # i + hop == i - hop: one neighbour, weights 1/2
        return _circulant(n, {0: 0.5, hop: 0.5})
    return _circulant(n, {-hop: 1 / 3, 0: 1 / 3, hop: 1 / 3})


def _round_rng(seed: int, t: int) -> np.random.Generator:
    return np.random.default_rng((int(seed), int(t)))


def _time_varying_random_ring(n: int, t: int, seed: int) -> SparseW:
    # Relabel the ring: place a of the plain ring becomes graph position perm[a]. (The official code permutes
    # only the rows of the off-diagonal part, which is not symmetric; a relabelling is.)
    perm = _round_rng(seed, t).permutation(n)
    return _ring(n).relabelled(perm)


def _time_varying_random_pair(n: int, t: int, seed: int) -> SparseW:
    perm = _round_rng(seed, t).permutation(n)
    a, b = perm[0::2], perm[1::2]
    return SparseW.from_coo(n, np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]), 0.5)


# ---------------------------------------------------------------------------------------------
# user graphs
# ---------------------------------------------------------------------------------------------


def _read_edge_list(path: str, n: int, directed: bool = False) -> nx.Graph:
    """One link per line, `i j` (or `i,j`); with `directed`, i sends to j."""
    import networkx as nx
    if not os.path.isfile(path):
        raise ConfigError(f"topology.edge_list={path!r}: no such file")
    G = nx.DiGraph() if directed else nx.Graph()
    G.add_nodes_from(range(n))
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.replace(",", " ").split()
            try:
                if len(parts) != 2:
                    raise ValueError
                i, j = int(parts[0]), int(parts[1])
            except ValueError:
                raise ConfigError(
                    f"topology.edge_list={path!r} line {lineno}: expected two integers, got {raw.strip()!r}"
                ) from None
            if not (0 <= i < n and 0 <= j < n):
                raise ConfigError(
                    f"topology.edge_list={path!r} line {lineno}: node ids must lie in 0..{n - 1} "
                    f"(topology.n_clients={n}), got {i} {j}"
                )
            if i != j:
                G.add_edge(i, j)
    return G


def _generate_graph(generator: str, n: int, seed: int, generator_kwargs: dict | None,
                    directed: bool = False) -> nx.Graph:
    import networkx as nx
    fn = getattr(nx, str(generator), None)
    # Only networkx.generators.*: other callables (is_directed, degree, ...) take a graph, not n.
    module = getattr(fn, "__module__", "") or ""
    if not callable(fn) or str(generator).startswith("_") or not module.startswith("networkx.generators"):
        raise ConfigError(
            f"topology.options.generator={generator!r} is not a networkx graph generator "
            "(e.g. watts_strogatz_graph, connected_watts_strogatz_graph, random_regular_graph)"
        )
    kwargs = dict(generator_kwargs or {})
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    # Seeded generators get the topology seed unless the user set one: same seed, same graph.
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = int(seed)
    try:
        # Most generators take n first; random_regular_graph(d, n) names it, so pass it by name.
        G = fn(n=n, **kwargs) if "n" in params else fn(n, **kwargs)
    except Exception as e:  # networkx raises many types for bad arguments
        raise ConfigError(
            f"topology.options.generator={generator} with n={n}, generator_kwargs={generator_kwargs}: {e}"
        ) from None
    if not isinstance(G, nx.Graph):
        raise ConfigError(f"topology.options.generator={generator} did not return a networkx graph")
    if directed:   # an undirected generator's links go both ways
        return _simple_directed(G)
    return _simple(G)


def _user_graph(n: int, seed: int, edge_list=None, generator=None, generator_kwargs=None,
                directed: bool = False) -> nx.Graph:
    import networkx as nx
    if (edge_list is None) == (generator is None):
        raise ConfigError(
            "topology.name=graph needs exactly one of topology.edge_list=PATH or "
            "topology.generator=NAME (a networkx generator, e.g. watts_strogatz_graph)"
        )
    if edge_list is not None:
        G, what = _read_edge_list(str(edge_list), n, directed), f"edge_list={edge_list}"
    else:
        G, what = _generate_graph(generator, n, seed, generator_kwargs, directed), f"generator={generator}"
    if G.number_of_nodes() != n:
        raise ConfigError(
            f"topology.name=graph with {what} has {G.number_of_nodes()} nodes but topology.n_clients={n}"
        )
    if directed:
        if n > 1 and not nx.is_strongly_connected(G):
            k = nx.number_strongly_connected_components(G)
            raise ConfigError(
                f"topology.name=graph with {what} and directed=true is not strongly connected ({k} "
                "components): push-sum gossip needs a path from every client to every other"
            )
    elif n > 1 and not nx.is_connected(G):
        k = nx.number_connected_components(G)
        raise ConfigError(
            f"topology.name=graph with {what} is disconnected ({k} components): "
            "gossip averaging needs a connected graph"
        )
    return G


def is_directed(name: str, options: dict, n: int | None = None, seed: int = 0) -> bool:
    """Whether topology `name` with these options is column- rather than doubly stochastic
    (engines then gossip with push-sum). Builds nothing for a built-in; a plug-in's graph (on
    n clients) says it by its kind (DiGraph, or a W with `directed: true`)."""
    if plugins.is_reference(name):
        if n is None:
            raise ValueError("is_directed: a plug-in graph needs n")
        return plugin_graph(name, int(n), int(seed), options)[1]
    return name in DIRECTED or (name == "graph" and bool(options.get("directed")))


# ---------------------------------------------------------------------------------------------
# plug-in graphs: `package.module:function`
# ---------------------------------------------------------------------------------------------

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


def _graph_kwargs(kw: dict) -> dict:
    """The options of topology.name=graph (the others belong to other names)."""
    return {k: v for k, v in kw.items() if k in ("edge_list", "generator", "generator_kwargs", "directed")}


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def valid_sizes(name: str) -> str:
    """Human description of the n_clients a topology accepts (for error messages)."""
    return {
        "complete": "any n >= 1",
        "ring": "any n >= 1",
        "torus": "n = r*c with r, c >= 3 and c in {r, r+1} (e.g. 9, 12, 16, 20, 25, 30, ...)",
        "ring_ext": "an even n >= 4",
        "expander": "a prime n (e.g. 5, 7, 11, 13, 17, 19, ...)",
        "social": ", ".join(f"n={k} for graph={g}" for g, (_, k) in SOCIAL_GRAPHS.items()),
        "time_varying_exponential": "any n >= 1",
        "time_varying_random_ring": "any n >= 1",
        "time_varying_random_pair": "an even n >= 2",
        "margulis": "a square n = b*b with b >= 2 (4, 9, 16, 25, ...)",
        "bipartite_one_peer": "an even n >= 2",
        "one_peer_exponential": "any n >= 1",
        "two_peer_exponential": "any n >= 1",
        "random_peer": "any n >= 1",
        "graph": "the number of nodes of the user graph",
    }.get(name, f"unknown topology (valid names: {', '.join(TOPOLOGIES)})")


def _size_ok(name: str, n: int) -> bool:
    if name == "torus":
        return _torus_shape(n) is not None
    if name == "ring_ext":
        return n >= 4 and n % 2 == 0
    if name == "expander":
        return _is_prime(n)
    if name in ("time_varying_random_pair", "bipartite_one_peer"):
        return n >= 2 and n % 2 == 0
    if name == "margulis":
        return n >= 4 and math.isqrt(n) ** 2 == n
    return True


def options_of(name: str) -> tuple[str, ...]:
    """The topology.options that topology `name` reads (`lazy` works on every graph)."""
    return _OPTIONS.get(name, ()) + ("lazy",)


def _check_kwargs(kw: dict, name: Optional[str] = None) -> dict:
    unknown = sorted(set(kw) - set(_KWARGS))
    if unknown:
        raise ConfigError(
            f"topology: unknown option(s) {', '.join(unknown)} (valid: {', '.join(_KWARGS)})"
        )
    # An option of another graph (graph=karate_club on a ring) would be silently ignored.
    foreign = sorted(k for k, v in kw.items() if v is not None and name is not None and k not in options_of(name))
    if foreign:
        raise ConfigError(f"topology.options.{foreign[0]} is not an option of topology.name={name} "
                          f"(its options: {', '.join(options_of(name))}); remove it")
    for flag in ("directed", "lazy"):
        if kw.get(flag) is not None and not isinstance(kw[flag], bool):
            raise ConfigError(f"topology.options.{flag}={kw[flag]!r} must be true or false")
    d = kw.get("degree")
    if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1):
        raise ConfigError(f"topology.options.degree={d!r} must be an integer >= 1 (random_peer: most out-links per round)")
    return {k: v for k, v in kw.items() if v is not None}


def validate_topology(name: str, n: int, seed: int = 0, **kw) -> None:
    """Raise ConfigError if (name, n, kw) cannot make a topology. Builds no matrix.

    For name='graph' the user graph is read/generated (cheap; a random generator with this
    seed) so that a wrong size or a disconnected graph is caught here.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"topology.n_clients={n!r} must be an integer >= 1")
    if plugins.is_reference(name):
        for flag in PLUGIN_OWN_OPTIONS:
            if kw.get(flag) is not None and not isinstance(kw[flag], bool):
                raise ConfigError(f"topology.options.{flag}={kw[flag]!r} must be true or false")
        plugin_graph(name, int(n), int(seed), kw)
        return
    if name not in TOPOLOGIES:
        raise ConfigError(f"topology.name={name!r} is unknown; valid names: {', '.join(TOPOLOGIES)}, "
                          f"or a reference 'package.module:function' to your own graph")
    kw = _check_kwargs(kw, name)
    if name == "social":
        g = kw.get("graph", DEFAULT_SOCIAL_GRAPH)
        if g not in SOCIAL_GRAPHS:
            raise ConfigError(
                f"topology.graph={g!r} is unknown for topology.name=social; valid: {', '.join(SOCIAL_GRAPHS)}"
            )
        need = SOCIAL_GRAPHS[g][1]
        if n != need:
            raise ConfigError(
                f"topology.name=social with graph={g} needs n_clients={need}, got {n} "
                f"(social graphs: {valid_sizes('social')})"
            )
    elif name == "graph":
        _user_graph(int(n), int(seed), **_graph_kwargs(kw))
    elif not _size_ok(name, int(n)):
        raise ConfigError(
            f"topology.name={name} cannot take topology.n_clients={n}: {name} needs {valid_sizes(name)}"
        )


# ---------------------------------------------------------------------------------------------
# the object engines use
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# the built-in names: builders (n, t, seed, options) -> W, registered like a user's graph
# ---------------------------------------------------------------------------------------------

def _user_named_graph(n: int, t: int, seed: int, kw: dict) -> np.ndarray | SparseW:
    G = _user_graph(n, seed, **_graph_kwargs(kw))
    return directed.directed_weights(G) if is_directed("graph", kw) else mixing_matrix_from_graph(G)


_BUILTINS = {
    "complete": lambda n, t, seed, kw: _complete(n),
    "ring": lambda n, t, seed, kw: _ring(n),
    "torus": lambda n, t, seed, kw: _torus(n),
    "ring_ext": lambda n, t, seed, kw: _ring_ext(n),
    "expander": lambda n, t, seed, kw: _expander(n),
    "social": lambda n, t, seed, kw: mixing_matrix_from_graph(_social_graph(kw.get("graph", DEFAULT_SOCIAL_GRAPH))),
    "time_varying_exponential": lambda n, t, seed, kw: _time_varying_exponential(n, t),
    "time_varying_random_ring": lambda n, t, seed, kw: _time_varying_random_ring(n, t, seed),
    "time_varying_random_pair": lambda n, t, seed, kw: _time_varying_random_pair(n, t, seed),
    "margulis": lambda n, t, seed, kw: directed.margulis(n),
    "bipartite_one_peer": lambda n, t, seed, kw: directed.bipartite_one_peer(n, t),
    "one_peer_exponential": lambda n, t, seed, kw: directed.one_peer_exponential(n, t),
    "two_peer_exponential": lambda n, t, seed, kw: directed.two_peer_exponential(n, t),
    "random_peer": lambda n, t, seed, kw: directed.random_peer(n, t, seed, int(kw.get("degree", RANDOM_PEER_DEGREE))),
    "graph": _user_named_graph,
}
assert tuple(_BUILTINS) == TOPOLOGIES
for _name, _builder in _BUILTINS.items():
    plugins.register("topology", _name, _builder)


def make_topology(name: str, n: int, seed: int = 0, **kw) -> Topology:
    """The topology `name` on n clients; ConfigError if they do not fit (see valid_sizes).

    kw: graph (social: davis_southern_women | florentine_families | karate_club |
    les_miserables), `edge_list=PATH` or `generator=NAME [+ generator_kwargs] [+ directed]`
    (name='graph'), degree (random_peer: out-links per round drawn from 1..degree, default 3),
    lazy (any name: W <- (I + W) / 2).
    Options meant for another topology are ignored; None values count as unset.
    """
    return Topology(plugins.canonical("topology", name), n, seed, **kw)
