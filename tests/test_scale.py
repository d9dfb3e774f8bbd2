"""Many clients (issue 17): the exact O(n P) all-reduce, and what a round costs as n grows."""
import numpy as np
import pytest
import torch

from qgm_ray.runner import run as runner
from qgm_ray.config import load_config
from qgm_ray.engine import allreduce
from qgm_ray.engine.local import LocalEngine

from helpers import quiet, small_run

SMALL = small_run("model.options={hidden: [8]}", "data.batch_size=8", "schedule.epochs=1", "backend=local")


@pytest.mark.parametrize("k", [1, 2, 3, 7, 37, 64])
def test_block_sum_adds_rows_left_to_right(k):
    x = torch.randn(k, 1001, generator=torch.Generator().manual_seed(k)) * 10 ** torch.randn(k, 1)
    want = x[0].numpy().copy()
    for r in x[1:]:
        want = want + r.numpy()          # numpy float32 adds, one row at a time
    got = allreduce.block_sum(x)
    assert got.shape == (1001,) and np.array_equal(got.numpy(), want)


def test_one_block_and_blocks_of_one_give_the_same_mean():
    x = torch.randn(9, 300, generator=torch.Generator().manual_seed(0)) * 10 ** torch.randn(9, 1)
    whole = allreduce.all_reduce([x])
    assert torch.equal(whole, allreduce.all_reduce([x[i:i + 1] for i in range(9)]))


def test_partials_are_added_in_block_order_then_divided():
    parts = [torch.randn(50, generator=torch.Generator().manual_seed(i)) * 1e3 ** i for i in range(4)]
    got = allreduce.mean_of_partials(parts, 9)
    want = ((parts[0] + parts[1]) + parts[2]) + parts[3]
    assert torch.equal(got, want / 9)
    assert torch.equal(parts[0], torch.randn(50, generator=torch.Generator().manual_seed(0)))  # inputs untouched


def test_all_reduce_is_the_mean_and_spread_copies():
    blocks = [torch.randn(3, 20), torch.randn(5, 20), torch.randn(1, 20)]
    mean = allreduce.all_reduce(blocks)
    assert torch.allclose(mean, torch.cat(blocks).mean(0), atol=1e-6)
    rows = allreduce.spread(mean, 4)
    assert rows.shape == (4, 20) and rows.stride() == (20, 1)   # a real copy, writable in place


@pytest.mark.parametrize("extra", [["algorithm.name=centralized_sgdm_n"], ["topology.name=complete"]])
def test_local_all_reduce_takes_no_weighted_mix(monkeypatch, extra):
    """No n x n work: centralized rules and the complete graph never build W or mix by rows."""
    import qgm_ray.engine.exchange as exchange

    def refuse(*a, **k):
        raise AssertionError("the all-reduce path went through the gossip mix")
    monkeypatch.setattr(exchange, "block_mix", refuse)
    monkeypatch.setattr(exchange, "mixing_matrix", refuse)
    cfg = load_config(None, SMALL + ["topology.n_clients=12", "ray.clients_per_actor=5"] + extra)
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = LocalEngine(cfg, ds, parts)
    losses = engine.train(range(3), lambda t: 0.05)
    assert len(losses) == 3 and all(np.isfinite([r.loss for r in losses]))
    # every client holds the same model after a centralized round (same mean, same update)
    if "centralized" in extra[0]:
        p = engine.params
        assert torch.equal(p, p[:1].expand_as(p))


def test_round_bytes_count_what_is_sent():
    from qgm_ray.engine.base import round_bytes
    from qgm_ray.topology import make_topology
    n, pb = 10, 400
    ring, complete = make_topology("ring", n), make_topology("complete", n)
    assert round_bytes(ring, False, n, 0, pb) == 2 * n * pb                   # two neighbours each
    assert round_bytes(complete, False, n, 0, pb) == 2 * (n - 1) * pb          # all-reduce: up and down a tree
    assert round_bytes(ring, True, n, 0, pb) == 2 * (n - 1) * pb               # centralized rule on any graph
    lazy = make_topology("complete", n, lazy=True)                             # (I + W)/2 is no plain mean
    assert round_bytes(lazy, False, n, 0, pb) == n * (n - 1) * pb


def test_client_actor_sends_one_row_per_block():
    """The Ray side (plain class, no Ray): a block of 3 returns one (D,) partial sum, and its
    next call finishes the round with the mean it is given."""
    from qgm_ray.engine.actors import ClientActor, dataset_meta
    cfg = load_config(None, SMALL + ["topology.n_clients=3", "algorithm.name=centralized_sgdm", "ray.clients_per_actor=3"])
    ds, parts = runner.prepare(cfg, log=quiet)
    arrays = [np.ascontiguousarray(t.numpy()) for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)]
    actor = ClientActor(cfg, dataset_meta(ds), [np.asarray(p) for p in parts], 0.0, *arrays)
    P = actor.set_clients([0, 1, 2], [0, 1, 2])
    partial, record = actor.step_mean(None, 0.05, None)
    assert partial.shape == (P,) and len(record["losses"]) == 3
    mean = actor.mean_of(3, partial)
    assert np.array_equal(mean, partial / np.float32(3))
    assert actor.step_mean(0.05, None, mean) == {"losses": []}
    p = actor.block.params
    assert torch.equal(p, p[:1].expand_as(p))


def _dense_wiring(W, group):
    """The per-row definition (what engine.base.wiring computed from the dense W every round)."""
    rows, need = [], set()
    for i in group:
        src = [int(j) for j in np.flatnonzero(W[i])]
        rows.append((src, [float(w) for w in W[i, src]]))
        need.update(src)
    outside = np.ones(W.shape[0], dtype=bool)
    outside[list(group)] = False
    used = (W[outside][:, list(group)] != 0).any(0)
    return rows, sorted(need - set(group)), [group[c] for c in np.flatnonzero(used)]


@pytest.mark.parametrize("name,n", [("ring", 10), ("torus", 16), ("social", 32), ("time_varying_exponential", 16),
                                    ("random_peer", 16), ("one_peer_exponential", 16)])
def test_sparse_wiring_equals_the_dense_definition(name, n):
    """wiring / exports / round_bytes read W's nonzeros once per matrix (not n x n per block and
    round) and give what the dense per-row definition gives, sources in increasing order."""
    from qgm_ray.engine import base
    from qgm_ray.topology import make_topology
    topo = make_topology(name, n, seed=1)
    for t in range(3):
        W = topo.matrix(t)
        for k in (1, 3, n):
            for g in base.groups_of(n, k):
                rows, need, out = _dense_wiring(W, g)
                assert base.wiring(W, g) == (rows, need)
                assert base.exports(W, g) == out
        assert base.round_bytes(topo, False, n, t, 1) == sum(topo.out_degree(i, t) for i in range(n))


def test_local_models_are_evaluated_on_a_subset_only_above_the_budget(monkeypatch):
    from qgm_ray.engine import evaluation
    assert evaluation.local_eval_rows(16, 4000, 0) is None            # the default run: every sample
    assert evaluation.local_eval_rows(32, 10000, 0) is None           # the paper's runs too
    rows = evaluation.local_eval_rows(4096, 65536, 3)
    assert len(rows) == evaluation.LOCAL_EVAL_BUDGET // 4096 and len(set(rows.tolist())) == len(rows)
    assert torch.equal(rows, evaluation.local_eval_rows(4096, 65536, 3))            # seeded
    assert len(evaluation.local_eval_rows(10**6, 65536, 3)) == evaluation.LOCAL_EVAL_MIN
    # the engine reports the clients' mean accuracy on that subset
    monkeypatch.setattr(evaluation, "LOCAL_EVAL_BUDGET", 100)
    monkeypatch.setattr(evaluation, "LOCAL_EVAL_MIN", 7)
    cfg = load_config(None, SMALL + ["topology.n_clients=4", "ray.clients_per_actor=2"])
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = LocalEngine(cfg, ds, parts)
    engine.train(range(2), lambda t: 0.05)
    keep = evaluation.local_eval_rows(4, len(ds.test_x), cfg.seed)
    assert len(keep) == 25
    x, y = ds.test_x[keep], ds.test_y[keep]
    want = np.mean([a for b in engine.blocks for a in b.evaluate_rows(x, y, 1024)])
    assert engine.evaluate()["local_test_accuracy"] == want


# ------------------------------------------------------------------ big CPU blocks on the heap (engine/host_heap.py)

HEAP_PROBE = """
import sys, torch
from qgm_ray.config import load_config
from qgm_ray.engine.local import LocalEngine
from qgm_ray.runner import run as runner
from qgm_ray.engine import host_heap

def in_heap(t):
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= t.data_ptr() < hi:
            return line.rstrip().endswith("[heap]")
    return False

before = in_heap(torch.empty(16 * 2**20))          # 64 MB: glibc maps it on its own
cfg = load_config(None, sys.argv[1:])
ds, parts = runner.prepare(cfg, log=lambda m: None)
engine = LocalEngine(cfg, ds, parts)
print(before, host_heap._heap_mode, in_heap(torch.empty(16 * 2**20)), engine.blocks[0].params.shape[0])
"""


def _heap_probe(*overrides) -> list[str]:
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, *SMALL, *overrides], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_the_local_engine_moves_big_allocations_to_the_heap():
    """The local engine's CPU blocks, big and small, switch their process's malloc to the heap
    for big tensors (freed memory reused, not faulted in again every round)."""
    # mlp with hidden [4096]: ~180k parameters, 2 blocks of 32 -> 23 MB a (k, P) tensor
    big = _heap_probe("topology.n_clients=64", "model.options={hidden: [4096]}", "ray.clients_per_actor=32",
                      "data.options={num_samples: 2000, num_features: 40, num_classes: 4}")
    assert big == ["False", "True", "True", "32"]
    small = _heap_probe("topology.n_clients=4")
    assert small == ["False", "True", "True", "2"]
