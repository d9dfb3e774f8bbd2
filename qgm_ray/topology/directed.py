"""The official code's one-peer, directed and expander graphs, as mixing matrices W(t).

Same convention as `qgm_ray.topology`: row i of W holds the weights graph position i applies
to what it receives, so W[j, i] != 0 means "i sends to j". A directed graph here is *column*
stochastic (each sender splits its mass over itself and its out-neighbours, the push-sum
convention of Stochastic Gradient Push, Assran et al. 2019); its rows need not sum to 1, and
gossip on it is de-biased by push-sum weights (engine/push_sum.py).

Each matrix is a pure function of (n, t, seed), so any process asking for round t builds the
same one. The math follows the official code (github.com/epfml/quasi-global-momentum,
pcode/utils/topology.py); comments say where and why it differs.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from qgm_ray.errors import ConfigError
from qgm_ray.sparse_w import SparseW

if TYPE_CHECKING:   # imported where a graph is built: validation reads no graph
    import networkx as nx


def exponential_hops(n: int) -> int:
    """Number of distinct hops 2^0 .. 2^p the exponential graphs cycle through: p + 1 with
    p = floor(log2(n - 1)), so the largest hop is below n. (Integer arithmetic: the official
    code's `int(log(n - 1) / log(2))` can round a power of two down.)"""
    return (n - 1).bit_length() if n > 2 else 1


def _sends(n: int, hops: list[int]) -> SparseW:
    """counts with 1 on the diagonal and +1 at (i + h mod n, i) for every hop h."""
    idx = np.arange(n)
    rows = np.concatenate([idx] + [(idx + h) % n for h in hops])
    return SparseW.from_coo(n, rows, np.tile(idx, len(hops) + 1), 1.0)


def one_peer_exponential(n: int, t: int) -> SparseW:
    """Directed, time-varying: in round t graph position i sends to i + 2^(t mod p) and keeps
    half. Every client also receives from exactly one peer, so W is doubly stochastic
    (push-sum weights stay 1); SGP's main topology."""
    if n == 1:
        return SparseW.from_dense(np.ones((1, 1)))
    return _sends(n, [2 ** (t % exponential_hops(n))]).column_normalised()


def two_peer_exponential(n: int, t: int) -> SparseW:
    """Directed, time-varying: graph position i sends to i + h and i + 2h, h = 2^(t mod p), a
    third of its mass each. Where i + 2h wraps onto i (2h = n) that link is a second self-link,
    as in the official code (self-weight 2/3)."""
    if n == 1:
        return SparseW.from_dense(np.ones((1, 1)))
    h = 2 ** (t % exponential_hops(n))
    return _sends(n, [h, 2 * h]).column_normalised()


def random_peer(n: int, t: int, seed: int, degree: int) -> SparseW:
    """Directed, time-varying: in round t each client draws an out-degree d uniformly from
    1..degree, then d hops uniformly from 1..n-1 (with replacement; repeats collapse), from the
    generator of (seed, t); the round is drawn again from the same generator until its graph
    is strongly connected. Column-stochastic: rows do not sum to 1, push-sum de-biases.

    Why redraw: the official `directed_random_peer_K` asserts that every round's graph is
    strongly connected (and stops the run otherwise), so a successful official run samples
    exactly these graphs. Without the condition a client that receives nothing for a few rounds
    sees its push-sum weight fall towards 1e-3, its local step is then amplified by 1/w in the
    de-biased model, and training diverges; with it the weights stay far from 0
    (docs/results/push_sum/README.md).
    One difference: the official degree is drawn from 1..K-1 (numpy's exclusive upper bound),
    ours from 1..degree."""
    if n == 1:
        return SparseW.from_dense(np.ones((1, 1)))
    # A client receives from nobody with probability ~exp(-mean out-degree) = exp(-(degree+1)/2),
    # so a draw has no such client with probability ~exp(-mu), mu = n exp(-(degree+1)/2). Above
    # mu = 20 (< 2e-9 a draw) the draws below cannot succeed: say so now, not after 10,000 draws.
    mu = n * math.exp(-(degree + 1) / 2)
    if mu <= 20:
        rng = np.random.default_rng((int(seed), int(t), 0x7065))
        idx = np.arange(n)
        for _ in range(MAX_DRAWS):
            d = rng.integers(1, degree + 1, size=n)
            senders = np.repeat(idx, d)
            links = np.unique(((senders + rng.integers(1, n, size=len(senders))) % n) * n + senders)   # repeats collapse
            counts = SparseW.from_coo(n, np.concatenate([idx, links // n]), np.concatenate([idx, links % n]), 1.0)
            if strongly_connected(counts):
                return counts.column_normalised()
    why = f"none in {MAX_DRAWS} draws" if mu <= 20 else f"~{mu:.0f} clients would receive from nobody in a round"
    raise ConfigError(
        f"topology.options.degree={degree} is too small for topology.name=random_peer with n_clients={n}: "
        f"every round must be strongly connected ({why}); raise the degree (3 or more; at this n about "
        f"{max(3, math.ceil(2 * math.log(n) - 1))}, where ~1 client a round receives from nobody)")


MAX_DRAWS = 10_000


def strongly_connected(links) -> bool:
    """Whether every node reaches every other along links[j, i] (i -> j) and back: a search
    from node 0 forwards and backwards over the nonzeros (O(nnz) per step, fast enough to run
    on every draw). links: a SparseW or a dense n x n array."""
    W = links if isinstance(links, SparseW) else SparseW.from_dense(np.asarray(links, dtype=np.float64))
    dst, src = W.coo_rows(), W.cols
    for a, b in ((src, dst), (dst, src)):        # forwards: src reaches dst; backwards: the reverse
        seen = np.zeros(W.n, dtype=bool)
        seen[0] = True
        frontier = seen.copy()
        while frontier.any():
            reached = np.zeros(W.n, dtype=bool)
            reached[b[frontier[a]]] = True
            reached &= ~seen
            seen |= reached
            frontier = reached
        if not seen.all():
            return False
    return True


def bipartite_one_peer(n: int, t: int) -> SparseW:
    """Undirected, time-varying, n even: odd graph position i pairs with i + h (even, since h is odd),
    h = 2^q - 1 with q cycling over 1..floor(log2(n-1)); weights 1/2. A perfect matching every
    round, so W is symmetric and doubly stochastic. (For n = 2 the official cycle is empty;
    the single pair (0, 1) is the only matching, so it is used every round.)"""
    q = 1 + t % max(1, exponential_hops(n) - 1)
    h = 2 ** q - 1
    odd = np.arange(1, n, 2)
    even = (odd + h) % n          # a bijection onto the even clients: no entry is written twice
    return SparseW.from_coo(n, np.concatenate([odd, even, odd, even]), np.concatenate([odd, even, even, odd]), 0.5)


def margulis(n: int) -> np.ndarray:
    """The Margulis-Gabber-Galil expander on n = b^2 nodes (networkx, degree 8 with repeated
    edges and some self-loops), weighted as the official code does: links counted once, a
    self-loop counts in a node's degree d_i, w_ij = 1 / max(d_i, d_j) on every link, and the
    diagonal completes each row to 1. Symmetric and doubly stochastic."""
    import networkx as nx
    b = int(round(np.sqrt(n)))
    G = nx.margulis_gabber_galil_graph(b)
    # nodes in the constructor's order, the order of the official networkx.adjacency_matrix(G)
    A = (nx.to_numpy_array(G, nodelist=list(G), weight=None) > 0).astype(float)
    deg = A.sum(axis=1)
    W = np.where(A > 0, 1.0 / np.maximum(deg[:, None], deg[None, :]), 0.0)
    np.fill_diagonal(W, 0.0)
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    return W


def directed_weights(G: nx.DiGraph) -> SparseW:
    """Column-stochastic W of a directed graph on nodes 0..n-1: a client keeps 1/(d+1) of its
    mass and sends 1/(d+1) along each of its d out-links (self-loops ignored)."""
    n = G.number_of_nodes()
    links = np.array([(j, i) for i, j in G.edges() if i != j], dtype=np.int64).reshape(-1, 2)   # (to, from)
    idx = np.arange(n)
    counts = SparseW.from_coo(n, np.concatenate([idx, links[:, 0]]), np.concatenate([idx, links[:, 1]]), 1.0)
    return counts.column_normalised()
