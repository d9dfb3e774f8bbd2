"""Directed and one-peer graphs (qgm_ray/topology/directed.py) and push-sum gossip (engine/push_sum.py)."""
import networkx as nx
import numpy as np
import pytest
import torch

from qgm_ray.topology import directed
from qgm_ray.algorithms import make_algorithm
from qgm_ray.config import load_config
from qgm_ray.engine import push_sum as ps
from qgm_ray.engine.base import block_mix, wiring
from qgm_ray.errors import ConfigError
from qgm_ray.topology import DIRECTED, make_topology

from helpers import small_run

DIRECTED_CASES = [("one_peer_exponential", {}), ("two_peer_exponential", {}), ("random_peer", {}),
                  ("random_peer", {"degree": 3})]


def edge_list(tmp_path, lines):
    p = tmp_path / "edges.txt"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


# ------------------------------------------------------------------ the matrices

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
@pytest.mark.parametrize("name,kw", DIRECTED_CASES)
def test_directed_graphs_are_column_stochastic_and_flagged(name, kw, n):
    topo = make_topology(name, n, seed=3, **kw)
    assert topo.directed and topo.time_varying and name in DIRECTED
    for t in range(6):
        W = topo.matrix(t)
        np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)
        assert (W >= 0).all() and (np.diag(W) > 0).all()   # every client keeps part of its mass


def test_one_peer_exponential_sends_to_i_plus_2_to_the_t():
    n = 16   # hops 1, 2, 4, 8, then again 1
    for t, hop in enumerate([1, 2, 4, 8, 1]):
        W = directed.one_peer_exponential(n, t).toarray()
        for i in range(n):
            assert set(np.flatnonzero(W[:, i])) == {i, (i + hop) % n}   # column i: where i sends
            assert W[(i + hop) % n, i] == W[i, i] == 0.5


def test_two_peer_exponential_sends_to_two_peers_with_a_third_each():
    W = directed.two_peer_exponential(16, 1).toarray()   # hop 2: i -> i+2, i+4
    for i in range(16):
        assert set(np.flatnonzero(W[:, i])) == {i, (i + 2) % 16, (i + 4) % 16}
        assert W[i, i] == pytest.approx(1 / 3)
    # n = 4, hop 2: i + 2h wraps onto i, a second self-link (the official code's counting)
    W = directed.two_peer_exponential(4, 1).toarray()
    assert W[0, 0] == pytest.approx(2 / 3) and W[2, 0] == pytest.approx(1 / 3)


def test_random_peer_is_seeded_per_round_and_not_row_stochastic():
    a, b = make_topology("random_peer", 16, seed=7, degree=2), make_topology("random_peer", 16, seed=7, degree=2)
    np.testing.assert_array_equal(a.matrix(5), b.matrix(5))
    assert not np.array_equal(a.matrix(5), a.matrix(6))
    assert not np.array_equal(a.matrix(5), make_topology("random_peer", 16, seed=8, degree=2).matrix(5))
    outs = [int(np.count_nonzero(a.matrix(t)[:, i])) - 1 for t in range(20) for i in range(16)]
    assert min(outs) >= 1 and max(outs) <= 2
    rows = np.concatenate([a.matrix(t).sum(axis=1) for t in range(20)])
    assert np.abs(rows - 1).max() > 0.1   # rows do not sum to 1: plain gossip would be biased


@pytest.mark.parametrize("n", [2, 4, 8, 16, 18])
def test_bipartite_one_peer_is_an_odd_even_matching_every_round(n):
    topo = make_topology("bipartite_one_peer", n)
    assert not topo.directed and topo.time_varying
    for t in range(5):
        W = topo.matrix(t)
        np.testing.assert_array_equal(W, W.T)
        np.testing.assert_allclose(W.sum(1), 1.0)
        for i in range(1, n, 2):
            (j,) = [j for j in np.flatnonzero(W[i]) if j != i]
            assert j % 2 == 0 and W[i, j] == 0.5


@pytest.mark.parametrize("n", [4, 9, 16, 25])
def test_margulis_weights_follow_the_degrees(n):
    topo = make_topology("margulis", n)
    W = topo.matrix()
    assert not topo.directed and not topo.time_varying
    np.testing.assert_allclose(W, W.T)
    np.testing.assert_allclose(W.sum(1), 1.0)
    G = nx.margulis_gabber_galil_graph(int(np.sqrt(n)))
    A = nx.to_numpy_array(G, nodelist=list(G), weight=None) > 0
    deg = A.sum(1)   # distinct neighbours, a self-loop counted once
    for i, j in zip(*np.nonzero(A)):
        if i != j:
            assert W[i, j] == pytest.approx(1 / max(deg[i], deg[j]))
    assert (W[~A & ~np.eye(n, dtype=bool)] == 0).all()
    assert 0 < topo.spectral_gap() < 1


@pytest.mark.parametrize("name,n,match", [("margulis", 8, "square"), ("margulis", 1, "square"),
                                          ("bipartite_one_peer", 7, "even")])
def test_sizes_a_graph_cannot_take_are_config_errors(name, n, match):
    with pytest.raises(ConfigError, match=match):
        make_topology(name, n)


def test_directed_edge_list_means_sender_to_receiver(tmp_path):
    path = edge_list(tmp_path, ["0 1", "1 2", "2 0", "0 2"])   # 0 sends to 1 and 2
    topo = make_topology("graph", 3, edge_list=path, directed=True)
    assert topo.directed and not topo.time_varying
    W = topo.matrix()
    np.testing.assert_allclose(W[:, 0], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(W[:, 1], [0, 0.5, 0.5])
    np.testing.assert_allclose(W[:, 2], [0.5, 0, 0.5])
    # the same file undirected: Metropolis-Hastings, symmetric
    U = make_topology("graph", 3, edge_list=path).matrix()
    np.testing.assert_allclose(U, U.T)


def test_directed_graph_must_be_strongly_connected(tmp_path):
    path = edge_list(tmp_path, ["0 1", "1 2"])   # connected, but nothing reaches 0
    with pytest.raises(ConfigError, match="strongly connected"):
        make_topology("graph", 3, edge_list=path, directed=True)
    make_topology("graph", 3, edge_list=path)   # undirected it is fine


def test_directed_generator_graphs():
    # a directed generator's links as they come (not strongly connected here: refused)
    with pytest.raises(ConfigError, match="strongly connected"):
        make_topology("graph", 10, seed=1, generator="random_k_out_graph",
                      generator_kwargs={"k": 1, "alpha": 1.0, "self_loops": False}, directed=True)
    # an undirected generator's links go both ways; weights split per sender, not symmetric
    topo = make_topology("graph", 6, generator="wheel_graph", directed=True)
    W = topo.matrix()
    np.testing.assert_allclose(W.sum(0), 1.0)
    assert not np.allclose(W, W.T) and not np.allclose(W.sum(1), 1.0)


@pytest.mark.parametrize("kw,match", [({"degree": 0}, "degree"), ({"degree": 1.5}, "degree"),
                                      ({"directed": "yes"}, "directed")])
def test_bad_directed_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        make_topology("random_peer", 8, **kw)


# ------------------------------------------------------------------ push-sum

def gossip(topo, z, rounds, push_sum=True):
    """Mix the rows of z for `rounds` rounds of topo with block_mix (no optimisation step)."""
    n = z.shape[0]
    w = torch.ones(n, dtype=z.dtype)
    everyone = list(range(n))
    for t in range(rounds):
        rows, _ = wiring(topo.matrix(t), everyone)
        payload = ps.send(z, z, w) if push_sum else z
        mixed = block_mix(payload, everyone, rows, [], [])
        z, w = ps.receive(mixed) if push_sum else (mixed, w)
    return z, w


@pytest.mark.parametrize("name,kw", DIRECTED_CASES + [("graph", {"directed": True})])
def test_push_sum_mixing_alone_reaches_the_exact_average(name, kw, tmp_path):
    n = 12
    if name == "graph":   # a directed graph with uneven in-degrees: a cycle plus chords from 0
        kw = {**kw, "edge_list": edge_list(tmp_path, [f"{i} {(i + 1) % n}" for i in range(n)] + ["0 5", "0 8", "3 9"])}
    topo = make_topology(name, n, seed=1, **kw)
    z0 = torch.randn(n, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z, w = gossip(topo, z0.clone(), 400)
    torch.testing.assert_close(z, z0.mean(0).expand_as(z), atol=1e-9, rtol=0)
    assert float(w.sum()) == pytest.approx(n)


def test_plain_gossip_on_a_column_stochastic_graph_is_biased():
    """Why push-sum: without the weights the clients agree on a point that is not the average."""
    topo = make_topology("random_peer", 12, seed=1)
    z0 = torch.randn(12, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z, _ = gossip(topo, z0.clone(), 400, push_sum=False)
    assert (z - z0.mean(0)).abs().max() > 1e-3


def test_push_sum_dsgd_round_is_sgp():
    """One round of DSGD with push-sum equals Stochastic Gradient Push written on numerators:
    x = w z; x <- x - lr g(z); x <- W x; w <- W w; z = x / w."""
    n, lr = 6, 0.1
    topo = make_topology("random_peer", n, seed=4, degree=2)
    algo = make_algorithm("dsgd", weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(n, 5, dtype=torch.float64, generator=gen)
    w = torch.rand(n, dtype=torch.float64, generator=gen) + 0.5
    state = algo.init(z)
    for t in range(3):
        g = torch.randn(n, 5, dtype=torch.float64, generator=gen)
        W = torch.tensor(topo.matrix(t))
        x_ref = W @ (w[:, None] * z - lr * g)
        w_ref = W @ w
        rows, _ = wiring(topo.matrix(t), list(range(n)))
        mixed = block_mix(ps.send(algo.pre_mix(state, z, g, lr), z, w), list(range(n)), rows, [], [])
        z_new, w = ps.receive(mixed)
        z = algo.post_mix(state, z, z_new, lr)
        torch.testing.assert_close(w, w_ref, rtol=1e-12, atol=0)
        torch.testing.assert_close(z, x_ref / w_ref[:, None], rtol=1e-10, atol=1e-12)


def test_weighted_mean_is_the_conserved_point():
    z = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    torch.testing.assert_close(ps.weighted_mean(z, torch.tensor([1.0, 3.0])), torch.tensor([2.5, 5.0], dtype=torch.float64))


# ------------------------------------------------------------------ config and engines

SMALL = small_run("topology.n_clients=4", "schedule.epochs=2", "eval.every_epochs=1", "backend=local")


@pytest.mark.parametrize("algo", ["d2", "d2_official", "gradient_tracking"])
def test_rules_undefined_on_directed_graphs_are_refused(algo):
    with pytest.raises(ConfigError, match=r"algorithm.name=%s cannot run on topology.name=one_peer_exponential.*qg_dsgdm_n" % algo):
        load_config(None, SMALL + [f"algorithm.name={algo}", "topology.name=one_peer_exponential"])
    load_config(None, SMALL + [f"algorithm.name={algo}", "topology.name=bipartite_one_peer"])   # undirected: fine


@pytest.mark.parametrize("algo", ["dsgd", "dsgdm_n", "qg_dsgdm_n", "qg_adam", "centralized_sgdm"])
def test_push_sum_rules_are_accepted_on_directed_graphs(algo):
    load_config(None, SMALL + [f"algorithm.name={algo}", "topology.name=random_peer"])


def test_local_engine_push_sum_weights_checkpoint_and_resume_exactly():
    from qgm_ray.runner import run as runner
    from qgm_ray.engine.local import LocalEngine
    cfg = load_config(None, SMALL + ["topology.name=random_peer", "topology.options={degree: 2}",
                                     "algorithm.name=qg_dsgdm_n"])
    ds, parts = runner.prepare(cfg, log=lambda m: None)
    lr = lambda t: 0.05  # noqa: E731
    a = LocalEngine(cfg, ds, parts)
    assert a.blocks[0].push_sum and a.blocks[0].payload_size == a.blocks[0].num_params + 1
    a.train(range(0, 6), lr)
    w = a.push_sum_weights()
    assert (w - 1).abs().max() > 1e-3 and float(w.sum()) == pytest.approx(4, rel=1e-5)
    saved = a.state_dict()
    assert all("push_sum_weight" in s for s in saved["clients"])
    tail_a = a.train(range(6, 12), lr)
    b = LocalEngine(cfg, ds, parts)
    b.load_state_dict(saved)
    assert b.train(range(6, 12), lr) == tail_a
    assert a.evaluate() == b.evaluate()
    # the averaged model is the push-sum weighted mean of the de-biased rows
    p, _ = a.averaged_params()
    torch.testing.assert_close(p, ps.weighted_mean(a.params, a.push_sum_weights()))


def test_local_engine_push_sum_elastic_joiners_start_with_weight_one():
    from qgm_ray.runner import run as runner
    from qgm_ray.engine.local import LocalEngine
    cfg = load_config(None, SMALL + ["topology.name=random_peer", "elastic.max_clients=6"])
    ds, parts = runner.prepare(cfg, log=lambda m: None)
    e = LocalEngine(cfg, ds, parts)
    e.train(range(0, 4), lambda t: 0.05)
    e.resize(6, at_round=4)
    w = e.push_sum_weights()
    assert w.shape == (6,) and w[4:].tolist() == [1.0, 1.0]
    e.train(range(4, 6), lambda t: 0.05)


def test_random_peer_rounds_are_strongly_connected_and_keep_weights_away_from_zero():
    """The official code asserts per-round strong connectivity; we redraw. Without it push-sum
    weights fell to ~1e-3 and SGP diverged (docs/results/push_sum)."""
    topo = make_topology("random_peer", 16, seed=0)   # degree 3
    w = np.ones(16)
    for t in range(400):
        W = topo.matrix(t)
        assert nx.is_strongly_connected(nx.from_numpy_array((W > 0).T.astype(float), create_using=nx.DiGraph))
        w = W @ w
        assert w.min() > 0.05
    with pytest.raises(ConfigError, match=r"topology.options.degree=1 is too small .*n_clients=64"):
        make_topology("random_peer", 64, degree=1)
    # Where no draw can be strongly connected (~n e^-2 clients that nobody sends to), it says so
    # before drawing, with a degree that fits this n.
    with pytest.raises(ConfigError, match=r"degree=3 is too small .*n_clients=16384: .*~2217 clients would "
                                          r"receive from nobody.*about 19"):
        make_topology("random_peer", 16384, degree=3)


def test_strongly_connected_agrees_with_networkx():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 10))
        A = rng.random((n, n)) < 0.3
        np.fill_diagonal(A, True)
        G = nx.from_numpy_array(A.T.astype(float), create_using=nx.DiGraph)
        assert directed.strongly_connected(A) == nx.is_strongly_connected(G)
