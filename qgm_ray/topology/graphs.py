"""The undirected built-in graphs as mixing matrices: Metropolis-Hastings weights of a
networkx graph, the ring-like circulants, torus, expander, social and time-varying graphs, and
the normalisation of a networkx graph to nodes 0..n-1 without self-loops that every graph
read from networkx goes through. (The directed ones are in directed.py.)

Weights follow the official QGM code (github.com/epfml/quasi-global-momentum,
pcode/utils/topology.py) unless a comment says why they differ.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from qgm_ray.sparse_w import SparseW
from qgm_ray.topology.names import SOCIAL_GRAPHS

# networkx is imported where a graph is built: validating a config of a built-in graph
# reads only the tables of names.py.
if TYPE_CHECKING:
    import networkx as nx


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

