"""`topology.name: graph`: the user's graph from an edge-list file or a networkx generator,
numbered 0..n-1 and checked connected (strongly, for a directed one)."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING

from qgm_ray.errors import ConfigError
from qgm_ray.topology.graphs import _simple, _simple_directed

if TYPE_CHECKING:
    import networkx as nx


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


def _graph_kwargs(kw: dict) -> dict:
    """The options of topology.name=graph (the others belong to other names)."""
    return {k: v for k, v in kw.items() if k in ("edge_list", "generator", "generator_kwargs", "directed")}
