"""The built-in graph names and what each one is: time-varying, directed, which options it reads,
the social graphs and their sizes. Plain tables, so validating a config of a built-in graph
reads them without building a matrix or importing networkx."""

from __future__ import annotations

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
