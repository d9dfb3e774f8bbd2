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
`"package.module:function"` reference is a user's graph (plugin.py says what it may return),
static (built once per n).

This package is the registry: the built-in names, registered below, and `make_topology`.
names.py holds the tables of names, graphs.py and directed.py the built-in graphs' weights,
user_graph.py the `graph` name, plugin.py a plug-in's graph, validate.py the checks that
build no matrix, mixing.py the Topology object the engines hold.
"""

from __future__ import annotations

import numpy as np

from qgm_ray import plugins
from qgm_ray.sparse_w import SparseW
from qgm_ray.topology import directed
from qgm_ray.topology.graphs import (
    _complete,
    _expander,
    _ring,
    _ring_ext,
    _social_graph,
    _time_varying_exponential,
    _time_varying_random_pair,
    _time_varying_random_ring,
    _torus,
    mixing_matrix_from_graph,
)
from qgm_ray.topology.mixing import Topology
from qgm_ray.topology.names import (
    DEFAULT_SOCIAL_GRAPH,
    DIRECTED,
    RANDOM_PEER_DEGREE,
    SOCIAL_GRAPHS,
    TIME_VARYING,
    TOPOLOGIES,
)
from qgm_ray.topology.plugin import plugin_graph
from qgm_ray.topology.user_graph import _graph_kwargs, _user_graph
from qgm_ray.topology.validate import is_directed, options_of, valid_sizes, validate_topology

__all__ = [
    "DEFAULT_SOCIAL_GRAPH", "DIRECTED", "SOCIAL_GRAPHS", "TIME_VARYING", "TOPOLOGIES", "Topology",
    "is_directed", "make_topology", "mixing_matrix_from_graph", "options_of", "plugin_graph",
    "valid_sizes", "validate_topology",
]


# The built-in names: builders (n, t, seed, options) -> W, registered like a user's graph.

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
