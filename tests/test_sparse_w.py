"""qgm_ray/sparse_w.py and the topologies built on it (issue 17: no dense n x n W at large n).

The built-in graphs now build their W from nonzeros. Each must give the same floats, bit for
bit, as the dense definition it replaced (written out here with plain numpy): a changed last
bit would change every run's numbers and break the replay of old checkpoints.
"""
import math

import networkx as nx
import numpy as np
import pytest

from qgm_ray import topology as T
from qgm_ray.sparse_w import SparseW, as_sparse


# --- the dense definitions (what topology.py / directed.py computed before) -------------------

def _circulant(n, offsets):
    W = np.zeros((n, n))
    idx = np.arange(n)
    for o, w in offsets.items():
        W[idx, (idx + o) % n] += w
    return W


def _ring(n):
    if n == 1:
        return np.ones((1, 1))
    if n == 2:
        return np.full((2, 2), 0.5)
    return _circulant(n, {-1: 1 / 3, 0: 1 / 3, 1: 1 / 3})


def _torus(n):
    r = math.isqrt(n)
    c = n // r
    G = nx.convert_node_labels_to_integers(nx.grid_2d_graph(r, c, periodic=True), ordering="sorted")
    return (nx.to_numpy_array(G, nodelist=range(n), weight=None) + np.eye(n)) / 5.0


def _expander(n):
    if n <= 3:
        return _ring(n)
    W = _circulant(n, {-1: 1 / 3, 1: 1 / 3})
    for i in range(1, n):
        j = pow(i, -1, n)
        if j != i:
            W[i, j] = 1 / 3
    np.fill_diagonal(W, 1.0 - W.sum(axis=1))
    return W


def _tv_exponential(n, t):
    if n == 1:
        return np.ones((1, 1))
    hop = 2 ** (t % (int(math.floor(math.log2(n - 1))) + 1 if n > 2 else 1))
    if (2 * hop) % n == 0:
        return _circulant(n, {0: 0.5, hop: 0.5})
    return _circulant(n, {-hop: 1 / 3, 0: 1 / 3, hop: 1 / 3})


def _random_ring(n, t, seed):
    perm = np.random.default_rng((seed, t)).permutation(n)
    W = np.empty((n, n))
    W[np.ix_(perm, perm)] = _ring(n)
    return W


def _random_pair(n, t, seed):
    perm = np.random.default_rng((seed, t)).permutation(n)
    W = np.zeros((n, n))
    a, b = perm[0::2], perm[1::2]
    W[a, a] = W[b, b] = W[a, b] = W[b, a] = 0.5
    return W


def _hops(n):
    return (n - 1).bit_length() if n > 2 else 1


def _sends(n, hops):
    counts = np.eye(n)
    idx = np.arange(n)
    for h in hops:
        np.add.at(counts, ((idx + h) % n, idx), 1.0)
    return counts / counts.sum(axis=0, keepdims=True)


def _bipartite(n, t):
    h = 2 ** (1 + t % max(1, _hops(n) - 1)) - 1
    W = np.zeros((n, n))
    odd = np.arange(1, n, 2)
    W[odd, odd] = 0.5
    W[(odd + h) % n, (odd + h) % n] = 0.5
    W[odd, (odd + h) % n] = W[(odd + h) % n, odd] = 0.5
    return W


def _random_peer(n, t, seed, degree=3):
    if n == 1:
        return np.ones((1, 1))
    rng = np.random.default_rng((seed, t, 0x7065))
    while True:
        d = rng.integers(1, degree + 1, size=n)
        senders = np.repeat(np.arange(n), d)
        counts = np.eye(n)
        counts[(senders + rng.integers(1, n, size=len(senders))) % n, senders] = 1.0
        if nx.is_strongly_connected(nx.from_numpy_array(counts.T, create_using=nx.DiGraph)):
            return counts / counts.sum(axis=0, keepdims=True)


DENSE = {
    "random_peer": _random_peer,
    "ring": lambda n, t, s: _ring(n),
    "torus": lambda n, t, s: _torus(n),
    "ring_ext": lambda n, t, s: _circulant(n, {-1: 0.25, 0: 0.25, 1: 0.25, n // 2: 0.25}),
    "expander": lambda n, t, s: _expander(n),
    "time_varying_exponential": lambda n, t, s: _tv_exponential(n, t),
    "time_varying_random_ring": lambda n, t, s: _random_ring(n, t, s),
    "time_varying_random_pair": lambda n, t, s: _random_pair(n, t, s),
    "bipartite_one_peer": lambda n, t, s: _bipartite(n, t),
    "one_peer_exponential": lambda n, t, s: np.ones((1, 1)) if n == 1 else _sends(n, [2 ** (t % _hops(n))]),
    "two_peer_exponential": lambda n, t, s: np.ones((1, 1)) if n == 1 else _sends(
        n, [2 ** (t % _hops(n)), 2 * 2 ** (t % _hops(n))]),
}
SIZES = {
    "ring": (1, 2, 3, 4, 7, 16, 33), "torus": (9, 12, 16, 20, 30, 42), "ring_ext": (4, 6, 10, 32),
    "expander": (2, 3, 5, 7, 11, 13, 29, 31, 37), "time_varying_exponential": (1, 2, 3, 4, 6, 16, 17, 40),
    "time_varying_random_ring": (1, 2, 3, 9, 16), "time_varying_random_pair": (2, 4, 10, 16),
    "bipartite_one_peer": (2, 4, 6, 16, 18), "one_peer_exponential": (1, 2, 3, 16, 17),
    "two_peer_exponential": (1, 2, 3, 4, 16, 17), "random_peer": (1, 2, 3, 5, 16, 24),
}


@pytest.mark.parametrize("name", sorted(DENSE))
def test_sparse_builders_equal_the_dense_definitions_bit_for_bit(name):
    for n in SIZES[name]:
        for lazy in (False, True):
            topo = T.make_topology(name, n, seed=3, lazy=lazy)
            for t in range(6):
                want = DENSE[name](n, t, 3)
                if lazy:
                    want = (np.eye(n) + want) / 2
                W = topo.sparse(t)
                assert isinstance(W, SparseW)
                got = W.toarray()
                assert got.tobytes() == want.tobytes(), (name, n, t, lazy)
                # no stored zeros, columns increasing in each row: what np.flatnonzero gave
                for i in range(n):
                    cols, weights = W.row(i)
                    assert cols.tolist() == np.flatnonzero(want[i]).tolist() and (weights != 0).all()


def test_large_ring_and_torus_are_built_without_a_dense_matrix():
    """16,384 clients: O(n) nonzeros (a dense float64 W would be 2.1 GB)."""
    for name, n, per_row in (("ring", 16384, 3), ("torus", 16384, 5), ("time_varying_exponential", 16384, 3),
                             ("one_peer_exponential", 16384, 2)):
        # (random_peer too: ~2n links, drawn and checked strongly connected without a dense W)
        W = T.make_topology(name, n).sparse(1)
        assert W.nnz == per_row * n
        assert W.row_ptr.nbytes + W.cols.nbytes + W.weights.nbytes < 100 * per_row * n
    # (degree 3 leaves ~n e^-2 clients that nobody sends to: never strongly connected at this n)
    rp = T.make_topology("random_peer", 16384, seed=1, degree=24).sparse(0)
    assert 16384 * 10 < rp.nnz < 16384 * 15 and np.allclose(rp.col_sums(), 1)
    ring = T.make_topology("ring", 16384)
    assert ring.in_neighbors(0) == [1, 16383] and ring.out_degree(5) == 2


def test_from_coo_adds_repeats_in_the_given_order_and_drops_zeros():
    # 0.1 + 0.2 + 0.3 != 0.3 + 0.2 + 0.1 in float64: the order given is the order summed
    W = SparseW.from_coo(2, [0, 0, 0, 1, 1], [1, 1, 1, 0, 0], [0.1, 0.2, 0.3, 1.0, -1.0])
    assert W.toarray()[0, 1] == (0.0 + 0.1) + 0.2 + 0.3 and W.toarray()[0, 1] != (0.3 + 0.2) + 0.1
    assert W.nnz == 1 and W.row(1)[0].tolist() == []        # 1.0 - 1.0 = 0 is not stored


def test_reading_a_sparse_w():
    rng = np.random.default_rng(0)
    D = rng.random((7, 7)) * (rng.random((7, 7)) < 0.4)
    D[0, 1] = D[2, 2] = D[4, 3] = 0.0
    D[np.arange(7), (np.arange(7) + 3) % 7] = 0.5      # no empty column (column_normalised divides)
    W = SparseW.from_dense(D)
    assert np.array_equal(W.toarray(), D) and W.nnz == np.count_nonzero(D)
    for j in range(7):
        assert W.col(j).tolist() == np.flatnonzero(D[:, j]).tolist()
    assert W.off_diagonal_nnz() == np.count_nonzero(D) - np.count_nonzero(np.diagonal(D))
    assert np.allclose(W.col_sums(), D.sum(0))
    assert np.array_equal(W.column_normalised().toarray()[D != 0], (D / D.sum(0, keepdims=True))[D != 0])
    perm = rng.permutation(7)
    P = np.empty((7, 7))
    P[np.ix_(perm, perm)] = D
    assert np.array_equal(W.relabelled(perm).toarray(), P)
    assert np.array_equal(W.lazy().toarray(), (np.eye(7) + D) / 2)
    with pytest.raises(ValueError, match="n x n"):
        SparseW.from_dense(np.ones((2, 3)))


def test_as_sparse_converts_a_dense_array_once_and_keeps_it_alive_only_while_the_array_lives():
    D = T.make_topology("ring", 8).matrix(0)
    a = as_sparse(D)
    assert as_sparse(D) is a and as_sparse(a) is a
    assert np.array_equal(a.toarray(), D)
    E = D.copy()
    assert as_sparse(E) is not a


def test_engines_read_w_only_through_the_sparse_form(monkeypatch):
    """A round's wiring, exports and bytes come from `Topology.sparse`; `matrix` (dense) is
    never called, so no process of a run holds an n x n array."""
    from qgm_ray.engine import base, placement
    topo = T.make_topology("ring", 64)
    monkeypatch.setattr(T.Topology, "matrix", lambda self, t=0: pytest.fail("dense W built"))
    W = base.mixing_matrix(topo, False, 64, 0)
    groups = base.groups_of(64, 16)
    assert base.wiring(W, groups[1])[1] == [15, 32]
    assert base.exports(W, groups[1]) == [16, 31]
    assert base.round_bytes(topo, False, 64, 0, 10) == 64 * 2 * 10
    assert placement.cross_node_bytes(W, groups, ["a", "a", "b", "b"], 1) == 4   # 31 <-> 32, 63 <-> 0
    assert placement.actor_traffic([W], groups)[0, 1] == 2


def test_directed_weights_of_a_digraph_equal_the_dense_definition_bit_for_bit():
    """`graph` with directed: true and plug-in DiGraphs: counts (self 1, one per out-link,
    self-loops ignored), each column divided by its sum."""
    from qgm_ray.topology import directed
    for s in range(20):
        G = nx.gnp_random_graph(5 + s, 0.3, seed=s, directed=True)
        G.add_edge(0, 0)
        n = G.number_of_nodes()
        counts = np.eye(n)
        for i, j in G.edges():
            if i != j:
                counts[j, i] = 1.0
        want = counts / counts.sum(axis=0, keepdims=True)
        assert directed.directed_weights(G).toarray().tobytes() == want.tobytes()
