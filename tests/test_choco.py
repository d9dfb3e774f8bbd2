"""CHOCO-Gossip, the exchange of a compressed run (engine/choco.py), on the local engine and the
ClientActor as a plain class: against an independent dense reference, against the
uncompressed rules, its bytes, its checkpoints, resizes, warm-up and refusals."""
import math
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qgm_ray.compression import Compressor
from qgm_ray.config import load_config
from qgm_ray.engine.choco import keep_at
from qgm_ray.errors import ConfigError
from qgm_ray.runner import run as runner

from helpers import local_engine, main_py, quiet, read_metrics, small_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # `examples`, as test_plugins does
from examples.heavy_ball import HeavyBallDSGD  # noqa: E402

U = 2.0 ** -24   # float32's unit roundoff
BASE = small_run("backend=local", "topology.n_clients=5", "schedule.epochs=2", "eval.every_epochs=1",
                 "ray.clients_per_actor=2", "algorithm.name=dsgdm_n")
TOP_K = ["compression.op=top_k", "compression.keep=0.25", "compression.consensus_lr=0.5"]


def small(*extra):
    return load_config(None, BASE + list(extra))


def engine(*extra):
    return local_engine(small(*extra))


def spied_rounds(e, rounds, lr=0.05):
    """Train `rounds` rounds; per round (every client's payload, what each post_mix received),
    in position order, each (n, D) float32 numpy."""
    seen, mix = [], e.exchange.mix

    def spy(t, payloads, blocks=()):
        before = torch.cat(payloads).clone()
        mixed = mix(t, payloads, blocks)
        seen.append((before.numpy(), torch.cat(mixed).clone().numpy()))
        return mixed
    e.exchange.mix = spy
    e.train(range(rounds), lambda t: lr)
    return seen


def top_k_reference(x: np.ndarray, keep: float) -> np.ndarray:
    """Per row the m = max(1, floor(d * keep)) entries of largest magnitude (a tie to the lower
    index), the rest zero."""
    m = max(1, math.floor(round(x.shape[1] * keep, 6)))
    q = np.zeros_like(x)
    for i, row in enumerate(x):
        idx = np.argsort(-np.abs(row), kind="stable")[:m]
        q[i, idx] = row[idx]
    return q


def choco_reference(W: np.ndarray, payloads, compress, gamma: float):
    """CHOCO-Gossip over the whole n x D matrix: X_hat and the differences in float32 (the
    rounding every engine does elementwise), S = W X_hat kept in float64. Returns what each
    round hands post_mix and the largest magnitude met (for the rounding bound)."""
    n, d = payloads[0].shape
    xhat, s = np.zeros((n, d), np.float32), np.zeros((n, d))
    out, scale = [], 0.0
    for P in payloads:
        Q = compress(P - xhat)
        xhat = xhat + Q
        s = s + W @ Q.astype(np.float64)
        out.append(P + gamma * (s - xhat))
        scale = max(scale, np.abs(P).max(), np.abs(xhat).max(), np.abs(s).max())
    return out, scale


def rounding_bound(rounds: int, W: np.ndarray, scale: float) -> float:
    """What float32 may add to CHOCO's output over `rounds` rounds: s sums deg + 1 terms per
    round into itself (deg + 2 roundings of at most u * scale each, accumulating over the
    rounds), then p + gamma (s - x_hat) rounds three more times."""
    deg = int((W != 0).sum(1).max())
    return (rounds * (deg + 2) + 3) * U * scale


def test_the_engine_equals_a_dense_reference_of_choco_gossip():
    e = engine(*TOP_K)
    seen = spied_rounds(e, 6)
    W = e.topology.matrix(0)
    want, scale = choco_reference(W, [p for p, _ in seen], lambda x: top_k_reference(x, 0.25), 0.5)
    tol = rounding_bound(6, W, scale)
    for t, ((_, got), ref) in enumerate(zip(seen, want)):
        assert np.abs(got - ref).max() <= tol, t
    # compressed: what post_mix gets is not the plain mix
    assert np.abs(seen[-1][1] - W @ seen[-1][0]).max() > 100 * tol


@pytest.mark.parametrize("rule", ["dsgd", "qg_dsgdm_n", "gradient_tracking", "d2"])
def test_top_k_keeping_everything_with_step_one_is_the_uncompressed_rule(rule):
    """keep 1.0 sends q = payload - x_hat whole and gamma 1 takes s - x_hat whole: post_mix gets
    sum_j W_ij payload_j up to float32 rounding (rounding_bound, plus the plain mix's own), and the
    run follows the uncompressed one."""
    plain = engine(f"algorithm.name={rule}")
    e = engine(f"algorithm.name={rule}", "compression.op=top_k", "compression.keep=1.0", "compression.consensus_lr=1.0")
    seen = spied_rounds(e, 5)
    plain.train(range(5), lambda t: 0.05)
    W = e.topology.matrix(0)
    deg = int((W != 0).sum(1).max())
    _, scale = choco_reference(W, [p for p, _ in seen], lambda x: x, 1.0)
    tol = rounding_bound(5, W, scale) + deg * U * scale
    for t, (payload, got) in enumerate(seen):
        assert np.abs(got - W @ payload.astype(np.float64)).max() <= tol, (rule, t)
    assert torch.allclose(e.params, plain.params, rtol=0, atol=1e-5), rule


@pytest.mark.parametrize("op, options, wire_bytes", [
    ("top_k", ["compression.keep=0.1"], lambda d: 6 * (d // 10)),   # 4-byte values + uint16 indices
    ("random_k", ["compression.keep=0.1"], lambda d: 4 * (d // 10)),           # values only: indices from the key
    ("random_k", ["compression.keep=0.1", "compression.unbiased=true"], lambda d: 4 * (d // 10)),
    ("qsgd", ["compression.levels=4"], lambda d: 4 + math.ceil(d * 4 / 8)),   # a norm, then sign + 3 level bits
    ("qsgd", ["compression.levels=1", "compression.unbiased=false"], lambda d: 4 + math.ceil(d * 2 / 8)),
    ("sign", [], lambda d: 4 + math.ceil(d / 8)),                             # a scale, then one bit per entry
], ids=["top_k", "random_k", "random_k-unbiased", "qsgd-4", "qsgd-1-biased", "sign"])
def test_bytes_sent_is_the_wire_size_on_every_edge(op, options, wire_bytes):
    e = engine(f"compression.op={op}", *options)
    records = e.train(range(3), lambda t: 0.05)
    d = e.exchange.payload_floats
    edges = int((e.topology.matrix(0) != 0).sum()) - e.n_clients
    assert [r.bytes_sent for r in records] == [edges * wire_bytes(d)] * 3
    assert sum(e.exchange.edge_bytes(0).values()) == records[0].bytes_sent


def test_bytes_crossing_nodes_are_counted_at_the_wire_size():
    """The payloads that cross nodes are those of plain gossip; each is the compressor's wire size."""
    plain, e = engine(), engine(*TOP_K)
    nodes = ["a", "b", "a"]   # the three blocks (2, 2, 1 clients) on two nodes
    crossing = plain.exchange.cross_node_bytes(0, nodes) // plain.exchange.payload_bytes
    assert crossing > 0 and e.exchange.cross_node_bytes(0, nodes) == crossing * e.exchange.payload_bytes_at(0)
    assert e.exchange.record(0, 0.0, nodes).bytes_cross_node == crossing * e.exchange.payload_bytes_at(0)


def test_a_client_actor_returns_the_wire_rows_it_counts():
    """What a ClientActor puts in the object store for its exported rows: uint8 arrays of the
    compressor's wire size each (the bytes bytes_sent counts per payload)."""
    from qgm_ray.engine.actors import ClientActor, dataset_meta
    cfg = small(*TOP_K)
    ds, parts = runner.prepare(cfg, log=quiet)
    actor = ClientActor(cfg, dataset_meta(ds), parts, 0, *(x.numpy() for x in (ds.train_x, ds.train_y,
                                                                             ds.test_x, ds.test_y)))
    actor.set_clients([0, 1], [0, 1])
    *wire, record = actor.step(None, 0.05, [], export=[0, 1], t=0)
    e = engine(*TOP_K)
    assert len(wire) == 2 and len(record["losses"]) == 2
    assert all(w.dtype == np.uint8 and w.nbytes == e.exchange.payload_bytes_at(0) for w in wire)
    assert e.exchange.payload_bytes_at(0) < 4 * e.exchange.payload_floats / 2


def test_the_warm_up_is_the_official_schedule_in_keep_terms():
    """compress_warmup_values 0.75, 0.9375, ... (ratios) are keep 0.25, 0.0625, ...; those at
    least as dense as the target keep share warmup_epochs equally, then the target holds."""
    values = [0.25, 0.0625, 0.015625, 0.004, 0.001]
    assert [keep_at(e, 0.001, 5, values) for e in (0, 0.99, 1, 2.5, 4.99, 5, 9)] == \
        [0.25, 0.25, 0.0625, 0.015625, 0.001, 0.001, 0.001]
    # keep 0.01: three values stay (0.25, 0.0625, 0.015625), 2 epochs each over 6
    assert [keep_at(e, 0.01, 6, values) for e in (0, 1.9, 2, 4, 5.9, 6)] == [0.25, 0.25, 0.0625, 0.015625,
                                                                             0.015625, 0.01]
    assert keep_at(0, 0.5, 4, values) == 0.5   # nothing denser than the target: no warm-up
    e = engine("compression.op=top_k", "compression.keep=0.01", "compression.warmup_epochs=1")
    rpe = e.exchange.choco.rounds_per_epoch
    records = e.train(range(rpe + 1), lambda t: 0.05)
    assert records[0].bytes_sent > records[-2].bytes_sent > records[-1].bytes_sent


def test_a_checkpoint_carries_the_public_copies(tmp_path):
    a = engine(*TOP_K)
    a.train(range(3), lambda t: 0.05)
    state = a.state_dict()
    assert all(set(c["exchange"]) == {"xhat", "s"} for c in state["clients"])
    assert any(c["exchange"]["xhat"].abs().sum() > 0 for c in state["clients"])
    b = engine(*TOP_K)
    b.load_state_dict(state)
    ra, rb = a.train(range(3, 6), lambda t: 0.05), b.train(range(3, 6), lambda t: 0.05)
    assert torch.equal(a.params, b.params) and [r.loss for r in ra] == [r.loss for r in rb]


def test_a_stopped_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    """A stop (what SIGTERM sets) checkpoints x_hat and s with every client; --resume goes on
    from them to the same metrics rows as a run that was never stopped."""
    cfg = small(*TOP_K, "fault_tolerance.checkpoint_every=10", "eval.every_epochs=0.5")
    the_run = runner.Run.open(cfg, tmp_path / "r", log=quiet)

    def stop_early(row):
        if row["round"] >= 10:
            the_run.stop.signum = signal.SIGTERM
    the_run.on_eval = stop_early
    assert the_run.execute()["status"] == "stopped"
    assert runner.run(cfg, tmp_path / "r", resume=True, log=quiet)["status"] == "completed"
    runner.run(cfg, tmp_path / "full", log=quiet)
    rows = lambda d: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in read_metrics(d)]  # noqa: E731
    assert rows(tmp_path / "r") == rows(tmp_path / "full") and len(rows(tmp_path / "full")) >= 3


def test_a_resume_refuses_another_compression(tmp_path):
    cfg = small(*TOP_K, "fault_tolerance.checkpoint_every=10")
    runner.run(cfg, tmp_path / "r", log=quiet)
    with pytest.raises(ConfigError, match="compression.keep: 0.25 -> 0.5"):
        runner.run(small(*TOP_K, "compression.keep=0.5", "fault_tolerance.checkpoint_every=10"), tmp_path / "r",
                   resume=True, log=quiet)


def test_a_resize_restarts_every_public_copy_at_zero():
    """W changes at a resize: every client's x_hat and s start again at zero (as at round 0),
    so nothing extra travels; the bytes follow the new graph."""
    e = engine(*TOP_K, "elastic.max_clients=7")
    e.train(range(3), lambda t: 0.05)
    e.resize(7, 3)
    assert all(float(v.abs().sum()) == 0 for b in e.blocks for v in b.exchange_state.values())
    assert sum(b.k for b in e.blocks) == 7
    records = e.train(range(3, 5), lambda t: 0.05)
    assert all(math.isfinite(r.loss) for r in records)
    assert records[0].bytes_sent == 14 * e.exchange.payload_bytes_at(3)


def test_the_complete_graph_gossips_over_w():
    """No all-reduce for a compressed run: each client sends n - 1 compressed payloads."""
    e = engine(*TOP_K, "topology.name=complete")
    assert not e.exchange.all_reduce
    records = e.train(range(2), lambda t: 0.05)
    assert records[0].bytes_sent == 5 * 4 * e.exchange.payload_bytes_at(0)


def test_slowmo_outer_steps_travel_as_float32_beside_compressed_gossip():
    from qgm_ray.engine.slowmo import outer_step_bytes
    e = engine(*TOP_K, "algorithm.slowmo_tau=3")
    records = e.train(range(4), lambda t: 0.05)
    gossip = 10 * e.exchange.payload_bytes_at(0)   # a ring of 5: 10 directed edges
    floats = 4 * e.exchange.payload_floats
    assert [r.bytes_sent for r in records] == [gossip + outer_step_bytes(3, 5, t, floats) for t in range(4)]
    assert records[0].bytes_sent - gossip == 2 * 4 * floats


def test_op_none_keeps_the_plain_exchange():
    e = engine()
    assert type(e.exchange).__name__ == "Exchange" and not hasattr(e.exchange, "choco")
    assert all(b.exchange_state == {} for b in e.blocks) and "exchange" not in e.state_dict()["clients"][0]


class ForgetfulSign(Compressor):
    """A plug-in compressor whose decode does not give what compress gives (it drops the scale)."""

    def wire_bytes(self, d):
        return d

    def encode(self, rows, keys):
        return (rows.cpu().numpy() < 0).astype(np.uint8)

    def decode(self, wire, keys, d):
        return torch.from_numpy(1.0 - 2.0 * wire.astype(np.float32))

    def compress(self, rows, keys):
        return rows.sign() * rows.abs().mean(1, keepdim=True)


class FixedWHeavyBall(HeavyBallDSGD):
    """A rule that declares what it needs (as CHOCO written as a rule would)."""
    requires = {"fixed_w", "fixed_members"}


@pytest.mark.parametrize("extra, message", [
    (TOP_K + ["topology.name=time_varying_random_ring"],
     "compression.op=top_k (CHOCO-Gossip keeps s = sum_j W_ij x_hat_j) needs the same W every round, but "
     "topology.name=time_varying_random_ring is time-varying"),
    (TOP_K + ["topology.name=graph", "topology.options={generator: cycle_graph, directed: true}",
              "algorithm.name=dsgd"],
     "needs an undirected (doubly stochastic) graph, but topology.name=graph is directed (push-sum)"),
    (TOP_K + ["algorithm.name=centralized_sgdm"],
     "needs gossip over W (not an all-reduce rule), but algorithm.name=centralized_sgdm is an all-reduce rule"),
    (["compression.op=top_k"], "compression.op='top_k' needs compression.keep"),
    (TOP_K + ["compression.consensus_lr=1.5"], "compression.consensus_lr must be in (0, 1], got 1.5"),
    (TOP_K + ["compression.warmup_epochs=-1"], "compression.warmup_epochs must be >= 0 epochs"),
    (TOP_K + ["compression.warmup_epochs=5"], "compression.warmup_epochs=5 must be smaller than schedule.epochs=2"),
    (TOP_K + ["compression.warmup_keep=[0.5, 0]"], "compression.warmup_keep must be a non-empty list of fractions"),
    (["compression.op=random_k", "compression.keep=0"], "compression.keep must be a number in (0, 1], got 0"),
    (["compression.op=sign", "compression.warmup_epochs=1"],
     "compression.warmup_epochs=1 steps `keep`, which compression.op=sign does not read"),
    (["compression.op=test_choco:ForgetfulSign"], "compression.op='test_choco:ForgetfulSign'"),
    (["algorithm.name=test_choco:FixedWHeavyBall", "topology.name=time_varying_random_ring"],
     "algorithm.name=test_choco:FixedWHeavyBall needs the same W every round, but "
     "topology.name=time_varying_random_ring is time-varying"),
    (["algorithm.name=test_choco:FixedWHeavyBall", "elastic.schedule=[[1, 4]]"],
     "needs the same clients all run (no elastic.schedule, no fault_tolerance.on_failure=drop), but "
     "elastic.schedule is set"),
], ids=["time_varying", "directed", "all_reduce", "no_keep", "consensus_lr", "warmup_epochs", "warmup_long",
        "warmup_keep", "keep", "warmup_sign", "plugin_contract", "rule_fixed_w", "rule_fixed_members"])
def test_what_cannot_be_compressed_is_refused_in_one_line(extra, message):
    with pytest.raises(ConfigError) as err:
        small(*extra)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_main_py_refuses_before_anything_starts(tmp_path):
    out = tmp_path / "run"
    r = main_py("--set", "backend=local", "--set", "compression.op=top_k", "--set", "compression.keep=0.1",
                "--set", "topology.name=time_varying_exponential", "--output-dir", str(out))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "time-varying" in r.stderr
    assert not out.exists()
