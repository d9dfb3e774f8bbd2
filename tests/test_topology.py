import pickle

import networkx as nx
import numpy as np
import pytest

from qgm_ray.errors import ConfigError
from qgm_ray.topology import (
    SOCIAL_GRAPHS,
    TOPOLOGIES,
    make_topology,
    mixing_matrix_from_graph,
    valid_sizes,
    validate_topology,
)

STATIC_CASES = [
    ("complete", 1),
    ("complete", 2),
    ("complete", 8),
    ("ring", 1),
    ("ring", 2),
    ("ring", 3),
    ("ring", 16),
    ("torus", 9),
    ("torus", 12),
    ("torus", 16),
    ("torus", 20),
    ("ring_ext", 4),
    ("ring_ext", 16),
    ("expander", 5),  # chord 2 -- 3 duplicates a ring edge
    ("expander", 11),  # chord 3 -- 4 duplicates a ring edge
    ("expander", 13),
    ("expander", 17),
] + [("social", n) for _, n in SOCIAL_GRAPHS.values()]

TV_CASES = [
    ("time_varying_exponential", 2),
    ("time_varying_exponential", 5),
    ("time_varying_exponential", 16),
    ("time_varying_random_ring", 3),
    ("time_varying_random_ring", 16),
    ("time_varying_random_pair", 2),
    ("time_varying_random_pair", 16),
]


def _kw(name, n):
    if name == "social":
        return {"graph": next(g for g, (_, k) in SOCIAL_GRAPHS.items() if k == n)}
    return {}


def _assert_mixing(W, n):
    assert W.shape == (n, n) and W.dtype == np.float64
    assert (W >= 0).all()
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(W, W.T, atol=1e-12)


def _connected(W):
    n = len(W)
    return n == 1 or nx.is_connected(nx.from_numpy_array((np.abs(W) > 0).astype(int)))


@pytest.mark.parametrize("name,n", STATIC_CASES)
def test_static_doubly_stochastic_symmetric_connected(name, n):
    topo = make_topology(name, n, **_kw(name, n))
    assert topo.name == name and topo.n == n and not topo.time_varying
    W = topo.matrix(0)
    _assert_mixing(W, n)
    assert _connected(W)
    assert topo.sparse(5) is topo.sparse(0)  # cached, same every round
    assert n == 1 or 0 < topo.spectral_gap() <= 1
    for i in range(n):
        nb = topo.in_neighbors(i)
        assert nb == sorted(nb) and i not in nb
        assert topo.out_degree(i) == len(nb)  # symmetric graph
    assert name in topo.describe()


@pytest.mark.parametrize("name,n", TV_CASES)
def test_time_varying_doubly_stochastic_and_connected_over_rounds(name, n):
    topo = make_topology(name, n, seed=3)
    assert topo.time_varying
    union = np.zeros((n, n))
    for t in range(12):
        W = topo.matrix(t)
        _assert_mixing(W, n)
        union += W
        if name == "time_varying_random_ring":
            assert _connected(W)
    assert _connected(union)


@pytest.mark.parametrize("name", ["time_varying_exponential", "time_varying_random_ring", "time_varying_random_pair"])
def test_time_varying_deterministic_in_seed_and_changes_with_t(name):
    a, b = make_topology(name, 16, seed=7), make_topology(name, 16, seed=7)
    for t in (0, 1, 2, 9):
        np.testing.assert_array_equal(a.matrix(t), b.matrix(t))
    assert not np.array_equal(a.matrix(0), a.matrix(1))
    # asking for rounds out of order (or after eviction from the cache) changes nothing
    late = a.matrix(40).copy()
    for t in range(30):
        a.matrix(t)
    np.testing.assert_array_equal(a.matrix(40), late)
    if name != "time_varying_exponential":  # exponential does not use the seed
        other = make_topology(name, 16, seed=8)
        assert not np.array_equal(a.matrix(2), other.matrix(2))


def test_exponential_hops():
    topo = make_topology("time_varying_exponential", 16)
    for t, hop in enumerate([1, 2, 4, 8, 1]):
        W = topo.matrix(t)
        assert topo.in_neighbors(0, t) == sorted({hop % 16, (-hop) % 16})
        expect = 0.5 if hop == 8 else 1 / 3
        assert W[0, hop] == pytest.approx(expect) and W[0, 0] == pytest.approx(expect)


def test_random_pair_is_a_matching():
    topo = make_topology("time_varying_random_pair", 10, seed=1)
    for t in range(4):
        W = topo.matrix(t)
        assert all(len(topo.in_neighbors(i, t)) == 1 for i in range(10))
        assert np.allclose(np.diag(W), 0.5)


def test_ring_weights_and_spectral_gap():
    topo = make_topology("ring", 16)
    W = topo.matrix()
    assert W[3, 2] == W[3, 3] == W[3, 4] == pytest.approx(1 / 3)
    assert topo.in_neighbors(0) == [1, 15]
    assert topo.spectral_gap() == pytest.approx(1 - (1 + 2 * np.cos(2 * np.pi / 16)) / 3)
    np.testing.assert_array_equal(make_topology("ring", 2).matrix(), np.full((2, 2), 0.5))
    np.testing.assert_array_equal(make_topology("ring", 1).matrix(), np.ones((1, 1)))
    assert make_topology("complete", 5).spectral_gap() == pytest.approx(1.0)


def test_torus_ring_ext_expander_weights():
    W = make_topology("torus", 16).matrix()  # 4x4, row-major: 0 talks to 1, 3, 4, 12
    assert set(np.flatnonzero(W[0])) == {0, 1, 3, 4, 12} and np.allclose(W[0][W[0] > 0], 0.2)
    assert make_topology("torus", 12).describe().startswith("torus(n=12, 3x4")
    W = make_topology("ring_ext", 8).matrix()
    assert set(np.flatnonzero(W[0])) == {0, 1, 7, 4} and np.allclose(W[0][W[0] > 0], 0.25)
    W = make_topology("expander", 13).matrix()
    # 5 * 8 = 40 = 1 mod 13: node 5 talks to 4, 6, 8 with 1/3 and keeps nothing (official code)
    assert set(np.flatnonzero(W[5])) == {4, 6, 8} and W[5, 5] == 0
    assert W[0, 0] == pytest.approx(1 / 3) and W[1, 1] == pytest.approx(1 / 3)


def test_social_sizes_and_metropolis_hastings():
    sizes = {g: make_topology("social", n, graph=g).n for g, (_, n) in SOCIAL_GRAPHS.items()}
    assert sizes == {"davis_southern_women": 32, "florentine_families": 15, "karate_club": 34, "les_miserables": 77}
    assert make_topology("social", 32).describe().startswith("social(n=32, graph=davis_southern_women")
    G = nx.path_graph(3)  # degrees 1, 2, 1
    W = mixing_matrix_from_graph(G)
    np.testing.assert_allclose(W, [[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])


@pytest.mark.parametrize(
    "name,n,allowed",
    [
        ("torus", 15, "9, 12, 16"),
        ("torus", 4, "9, 12, 16"),
        ("ring_ext", 7, "even"),
        ("expander", 16, "prime"),
        ("time_varying_random_pair", 9, "even"),
        ("social", 16, "n_clients=32"),
    ],
)
def test_invalid_n_refused(name, n, allowed):
    with pytest.raises(ConfigError, match=allowed) as e:
        make_topology(name, n)
    assert f"topology.name={name}" in str(e.value)
    with pytest.raises(ConfigError):
        validate_topology(name, n)
    assert valid_sizes(name)


def test_unknown_name_and_bad_options():
    with pytest.raises(ConfigError, match="time_varying_random_pair"):
        make_topology("hypercube", 8)
    with pytest.raises(ConfigError, match="karate_club"):
        make_topology("social", 32, graph="facebook")
    with pytest.raises(ConfigError, match="needs n_clients=15"):
        make_topology("social", 32, graph="florentine_families")
    with pytest.raises(ConfigError, match="unknown option"):
        make_topology("ring", 8, wieghts=1)
    with pytest.raises(ConfigError):
        make_topology("ring", 0)
    make_topology("ring", 8, graph=None, edge_list=None)  # unset/irrelevant options are fine
    assert set(TOPOLOGIES) >= {"complete", "ring", "social", "graph"}


def test_user_edge_list(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("# a 5-cycle with a chord\n0 1\n1 2\n2 3  # inline comment\n3 4\n4 0\n\n0 2\n")
    topo = make_topology("graph", 5, edge_list=str(path))
    W = topo.matrix()
    _assert_mixing(W, 5)
    assert topo.in_neighbors(0) == [1, 2, 4]
    assert W[0, 2] == pytest.approx(1 / 4)  # deg 3 both ends
    assert W[3, 4] == pytest.approx(1 / 3)  # deg 2 both ends
    validate_topology("graph", 5, edge_list=str(path))
    with pytest.raises(ConfigError, match="0..3"):
        make_topology("graph", 4, edge_list=str(path))  # node 4 out of range
    with pytest.raises(ConfigError, match="disconnected"):
        make_topology("graph", 6, edge_list=str(path))  # node 5 isolated
    with pytest.raises(ConfigError, match="no such file"):
        make_topology("graph", 5, edge_list=str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 2\n")
    with pytest.raises(ConfigError, match="two integers"):
        make_topology("graph", 3, edge_list=str(bad))


def test_user_generator_graph_seeded():
    kw = dict(generator="connected_watts_strogatz_graph", generator_kwargs={"k": 4, "p": 0.3})
    a, b = make_topology("graph", 20, seed=1, **kw), make_topology("graph", 20, seed=1, **kw)
    _assert_mixing(a.matrix(), 20)
    assert _connected(a.matrix())
    np.testing.assert_array_equal(a.matrix(), b.matrix())
    assert not np.array_equal(a.matrix(), make_topology("graph", 20, seed=2, **kw).matrix())
    reg = make_topology("graph", 12, generator="random_regular_graph", generator_kwargs={"d": 3})
    assert all(len(reg.in_neighbors(i)) == 3 for i in range(12))


def test_disconnected_or_bad_user_graph_refused():
    with pytest.raises(ConfigError, match="disconnected"):
        make_topology("graph", 10, generator="empty_graph")
    with pytest.raises(ConfigError, match="disconnected"):
        validate_topology("graph", 10, generator="watts_strogatz_graph", generator_kwargs={"k": 0, "p": 0})
    with pytest.raises(ConfigError, match="not a networkx graph generator"):
        make_topology("graph", 10, generator="no_such_graph")
    with pytest.raises(ConfigError, match="exactly one"):
        make_topology("graph", 10)


def test_matrix_is_read_only_and_topology_pickles():
    topo = make_topology("social", 15, graph="florentine_families")
    with pytest.raises(ValueError):
        topo.matrix()[0, 0] = 1.0
    clone = pickle.loads(pickle.dumps(topo))
    np.testing.assert_array_equal(clone.matrix(), topo.matrix())
    tv = make_topology("time_varying_random_ring", 8, seed=4)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(tv)).matrix(3), tv.matrix(3))


@pytest.mark.parametrize("name,n", [("social", 32), ("ring", 16), ("time_varying_exponential", 8), ("one_peer_exponential", 8)])
def test_lazy_mixing_is_half_identity_half_w(name, n):
    plain, lazy = make_topology(name, n, seed=1), make_topology(name, n, seed=1, lazy=True)
    for t in range(3):
        np.testing.assert_allclose(lazy.matrix(t), (np.eye(n) + plain.matrix(t)) / 2)
    if not plain.directed:
        # D2 needs lambda_min > -1/3; the social graph's MH weights give -0.434, lazy ones >= 0
        assert np.linalg.eigvalsh(lazy.matrix(0)).min() >= -1e-12
    assert "lazy" in lazy.describe()


def test_lazy_must_be_a_boolean():
    with pytest.raises(ConfigError, match="topology.options.lazy"):
        make_topology("ring", 8, lazy="yes")
