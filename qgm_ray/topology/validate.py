"""Whether a topology name, size and options make a graph, checked without building a matrix
(a user's `graph` is read or generated, a plug-in's built once), and whether the graph is
directed (gossiped with push-sum)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from qgm_ray import plugins
from qgm_ray.errors import ConfigError
from qgm_ray.topology.graphs import _is_prime, _torus_shape
from qgm_ray.topology.names import _KWARGS, _OPTIONS, DEFAULT_SOCIAL_GRAPH, DIRECTED, SOCIAL_GRAPHS, TOPOLOGIES
from qgm_ray.topology.plugin import PLUGIN_OWN_OPTIONS, plugin_graph
from qgm_ray.topology.user_graph import _graph_kwargs, _user_graph


def is_directed(name: str, options: dict, n: int | None = None, seed: int = 0) -> bool:
    """Whether topology `name` with these options is column- rather than doubly stochastic
    (engines then gossip with push-sum). Builds nothing for a built-in; a plug-in's graph (on
    n clients) says it by its kind (DiGraph, or a W with `directed: true`)."""
    if plugins.is_reference(name):
        if n is None:
            raise ValueError("is_directed: a plug-in graph needs n")
        return plugin_graph(name, int(n), int(seed), options)[1]
    return name in DIRECTED or (name == "graph" and bool(options.get("directed")))


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

