"""SlowMo (algorithms/slowmo.py, engine/slowmo.py) against references written from the
official equations (pcode/optim/decentralized_sgd.py, "use SlowMo"), on both engines."""
import numpy as np
import pytest
import torch

from qgm_ray.runner import run as runner
from qgm_ray.algorithms import make_algorithm
from qgm_ray.algorithms.slowmo import SlowMo, exact_average, is_outer_round, slowmo_update
from qgm_ray.config import load_config
from qgm_ray.engine.local import LocalEngine
from qgm_ray.runner.checkpoints import REPLAY_KEYS
from qgm_ray.errors import ConfigError

from helpers import quiet, small_run

SMALL = small_run("backend=local", "topology.n_clients=4", "schedule.epochs=2", "eval.every_epochs=0.5",
                  "algorithm.name=dsgdm_n")
SLOWMO = ["algorithm.slowmo_tau=3", "algorithm.slowmo_beta=0.6", "algorithm.slowmo_alpha=0.8"]


def small(*extra):
    return load_config(None, SMALL + list(extra))


def lr_of(t):
    return 0.05 if t < 5 else 0.02   # an lr change: the outer step divides and multiplies by lr_t


# ------------------------------------------------------------------ the official equations, in numpy

def reference_outer_step(x, x_slow, buf, lr, beta, alpha, w=None):
    """decentralized_sgd.py's SlowMo block on the (n, P) parameters after gossip, written from
    its equations: all-reduce average (summed in client order, then / n), slow buffer, outer
    iterate, every client set to it. float32 in, float32 out, one rounding per operation.
    `w`: push-sum weights (directed graphs): the average is sum_i w_i x_i / sum_i w_i."""
    if w is None:
        avg = x[0].copy()
        for i in range(1, len(x)):
            avg += x[i]
        avg /= np.float32(len(x))
    else:
        avg, total = x[0] * w[0], w[0].copy()
        for i in range(1, len(x)):
            avg += x[i] * w[i]
            total += w[i]
        avg /= total
    buf = np.float32(beta) * buf + (x_slow - avg) / np.float32(lr)
    x_slow = x_slow - np.float32(alpha * lr) * buf
    return np.repeat(x_slow[None], len(x), 0), x_slow, buf


def test_outer_rounds_are_the_official_local_index_rounds():
    # The official step runs with local_index = rounds done before it (the scheduler counts
    # after optimizer.step), and steps out when local_index % tau == 0.
    assert [t for t in range(10) if is_outer_round(t, 4)] == [0, 4, 8]
    assert [t for t in range(5) if is_outer_round(t, 1)] == [0, 1, 2, 3, 4]
    assert not any(is_outer_round(t, 0) for t in range(10))


def test_outer_step_is_bit_identical_to_the_equations_in_float32():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 33)).astype(np.float32)
    x_slow = rng.normal(size=33).astype(np.float32)
    buf = rng.normal(size=33).astype(np.float32)
    want_x, want_slow, want_buf = reference_outer_step(x, x_slow, buf, 0.03, 0.7, 0.9)
    xbar = exact_average(torch.from_numpy(x))
    got_slow, got_buf = slowmo_update(torch.from_numpy(x_slow), torch.from_numpy(buf), xbar, 0.03, 0.7, 0.9)
    assert np.array_equal(got_slow.numpy(), want_slow) and np.array_equal(got_buf.numpy(), want_buf)
    with pytest.raises(ValueError, match="lr > 0"):
        slowmo_update(torch.from_numpy(x_slow), torch.from_numpy(buf), xbar, 0.0, 0.7, 0.9)


@pytest.mark.parametrize("tau", [1, 3])
def test_slowmo_rule_matches_the_official_equations_over_several_rounds(tau):
    """DSGDm-N with SlowMo on a ring of 4, gradients drawn at random, lr changing: the wrapped
    rule (block of 4 rows) against a numpy loop of the official step. The rows are equal
    right after the outer rounds 0, tau, 2 tau, ... and only then."""
    n, p, rounds, beta, alpha, mom = 4, 9, 8, 0.6, 0.8, 0.9
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(rounds, n, p)).astype(np.float32)
    x0 = rng.normal(size=p).astype(np.float32)
    W = np.array([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]], dtype=np.float32) / 3

    algo = SlowMo(make_algorithm("dsgdm_n", momentum=mom, weight_decay=0.0), tau, beta, alpha)
    x = torch.from_numpy(np.repeat(x0[None], n, 0))
    state = algo.init(x)

    rx, rm = np.repeat(x0[None], n, 0), np.zeros((n, p), np.float32)
    r_slow, r_buf = x0.copy(), np.zeros(p, np.float32)
    equal_after = []
    for t in range(rounds):
        lr = lr_of(t)
        # ours
        payload = algo.pre_mix(state, x, torch.from_numpy(grads[t]), lr)
        mixed = torch.from_numpy(W) @ payload
        x = algo.post_mix(state, x, mixed, lr)
        if algo.due(t):
            algo.outer_step(state, x, exact_average(x), lr)
        # reference: local Nesterov step (apply_gradient), gossip, then SlowMo if local_index % tau == 0
        rm = np.float32(mom) * rm + grads[t]
        rx = W @ (rx - np.float32(lr) * (grads[t] + np.float32(mom) * rm))
        if t % tau == 0:
            rx, r_slow, r_buf = reference_outer_step(rx, r_slow, r_buf, lr, beta, alpha)
        np.testing.assert_allclose(x.numpy(), rx, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["slowmo_params"].numpy(), np.repeat(r_slow[None], n, 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["slowmo_buffer"].numpy(), np.repeat(r_buf[None], n, 0), rtol=1e-5, atol=1e-5)
        if bool((x == x[0]).all()):
            equal_after.append(t)
    assert equal_after == [t for t in range(rounds) if t % tau == 0]


# ------------------------------------------------------------------ the local engine

@pytest.mark.parametrize("topology", ["ring", "random_peer"])
def test_local_engine_with_slowmo_equals_plain_engine_plus_reference_outer_steps(topology):
    """LocalEngine with SlowMo against the same engine without it, stepped one round at a
    time, with the numpy outer step applied to its parameters after rounds 0, 3, 6: the
    same bits (momentum buffers are left alone by both, as in the official code). On a
    directed graph (push-sum) the average is weighted and the weights return to 1."""
    beta, alpha, tau = 0.6, 0.8, 3
    cfg = small(*SLOWMO, "ray.clients_per_actor=2", f"topology.name={topology}")
    ds, parts = runner.prepare(cfg, log=quiet)
    with_slowmo = LocalEngine(cfg, ds, parts)
    plain = LocalEngine(small("ray.clients_per_actor=2", f"topology.name={topology}"), ds, parts)
    assert plain.exchange.barriers == [] and [x.name for x in with_slowmo.exchange.barriers] == ["slowmo"]
    assert len(with_slowmo.blocks) == 2
    push_sum = plain.blocks[0].push_sum
    assert push_sum == (topology == "random_peer")
    x0 = plain.params[0].numpy().copy()
    r_slow, r_buf = x0.copy(), np.zeros_like(x0)
    losses = []
    for t in range(8):
        losses += plain.train(range(t, t + 1), lr_of)
        if t % tau == 0:
            w = plain.push_sum_weights().numpy().copy() if push_sum else None
            assert w is None or not np.all(w == 1)   # the gossip moved the weights: the weighting matters
            x, r_slow, r_buf = reference_outer_step(plain.params.numpy(), r_slow, r_buf, lr_of(t), beta, alpha, w)
            for b, g in zip(plain.blocks, plain.layout.groups(4)):
                b.params.copy_(torch.from_numpy(x[g]))
                if push_sum:
                    b.weight.fill_(1.0)
    assert [r.loss for r in with_slowmo.train(range(0, 8), lr_of)] == [r.loss for r in losses]
    assert torch.equal(with_slowmo.params, plain.params)
    if push_sum:
        assert torch.equal(with_slowmo.push_sum_weights(), plain.push_sum_weights())
    states = with_slowmo.client_states()
    for s in states:
        assert np.array_equal(s["algorithm"]["slowmo_params"].numpy(), r_slow)
        assert np.array_equal(s["algorithm"]["slowmo_buffer"].numpy(), r_buf)


def test_resume_with_slowmo_reproduces_the_run_and_counts_the_all_reduce(tmp_path):
    from qgm_ray.outputs import RunDir
    from qgm_ray.runner.checkpoints import CheckpointStore
    from qgm_ray.runner.metrics_file import MetricsFile
    cfg = small(*SLOWMO, "fault_tolerance.checkpoint_every=4", "fault_tolerance.keep=10")
    full = runner.run(cfg, tmp_path / "full", log=quiet)
    part = tmp_path / "part"
    runner.run(cfg, part, log=quiet)
    rd = RunDir(part)
    cut = int(CheckpointStore.of(rd.path).list()[2].stem.split("_")[1])
    assert 0 < cut < int(runner_rows(part)[-1]["round"])
    for p in CheckpointStore.of(rd.path).list():
        if int(p.stem.split("_")[1]) > cut:
            p.unlink()
    MetricsFile.of(rd.path).truncate_after(cut)
    (part / "summary.json").unlink()
    resumed = runner.run(cfg, part, resume=True, log=quiet)
    a, b = runner_rows(tmp_path / "full"), runner_rows(part)
    assert a == b   # every column but the clock, as written
    assert resumed["final_test_accuracy"] == full["final_test_accuracy"]
    # bytes: ring gossip every round plus a ring all-reduce of the parameters on rounds 0, 3, 6, ...
    n_params = (20 * 16 + 16) + (16 * 4 + 4)
    r = int(a[0]["round"])
    outer = len([t for t in range(r) if t % 3 == 0])
    assert int(a[0]["bytes_sent"]) == r * 4 * 2 * n_params * 4 + outer * 2 * 3 * n_params * 4


def test_checkpoints_without_slowmo_keep_their_fingerprint():
    """SlowMo off: the fingerprint is the one computed before the slowmo keys existed (old
    checkpoints stay resumable); on: a change of any of them refuses --resume."""
    import hashlib
    cfg = small()
    d = cfg.to_dict()
    for key in ("slowmo_tau", "slowmo_beta", "slowmo_alpha", "options"):   # options: newer still (plug-in knobs)
        del d["algorithm"][key]
    old = hashlib.sha256(repr([(k, d[k]) for k in REPLAY_KEYS]).encode()).hexdigest()[:16]
    assert runner.replay_fingerprint(cfg) == old == runner.replay_fingerprint(small("algorithm.slowmo_beta=0.3"))
    on = runner.replay_fingerprint(small(*SLOWMO))
    assert on != old and on != runner.replay_fingerprint(small(*SLOWMO, "algorithm.slowmo_beta=0.3"))


def runner_rows(path):
    import csv
    with open(path / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(f)]


def test_elastic_joiners_adopt_the_slow_state():
    cfg = small(*SLOWMO, "ray.clients_per_actor=2", "elastic.max_clients=4")
    ds, parts = runner.prepare(cfg, log=quiet)
    e = LocalEngine(cfg, ds, parts)
    e.train(range(0, 4), lr_of)
    e.resize(3, 4)
    e.train(range(4, 5), lr_of)
    e.resize(4, 5)
    states = e.client_states()
    for key in ("slowmo_params", "slowmo_buffer"):
        assert all(torch.equal(s["algorithm"][key], states[0]["algorithm"][key]) for s in states)
    assert int(states[3]["algorithm"]["step"]) == 0          # the joiner's own optimizer state is fresh
    e.train(range(5, 7), lr_of)                               # round 6 is an outer round: one model again
    assert bool((e.params == e.params[0]).all())


# ------------------------------------------------------------------ config

@pytest.mark.parametrize("overrides,message", [
    (["algorithm.slowmo_tau=-1"], r"algorithm.slowmo_tau must be an integer >= 0 .*got -1"),
    (["algorithm.slowmo_tau=1.5"], r"algorithm.slowmo_tau"),
    (["algorithm.slowmo_tau=4", "algorithm.name=qg_dsgdm_n"],
     r"algorithm.slowmo_tau=4 needs algorithm.name one of dsgd, dsgdm, dsgdm_n .*got 'qg_dsgdm_n'"),
    (["algorithm.slowmo_tau=4", "algorithm.name=gradient_tracking"], r"algorithm.slowmo_tau=4 needs algorithm.name"),
    (["algorithm.slowmo_beta=1.0"], r"algorithm.slowmo_beta must be in \[0, 1\), got 1.0"),
    (["algorithm.slowmo_alpha=0"], r"algorithm.slowmo_alpha must be > 0, got 0"),
])
def test_bad_slowmo_keys_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        small(*overrides)
    assert "\n" not in str(e.value)


def test_slowmo_keys_are_listed_and_off_by_default():
    from qgm_ray.config import describe_keys
    lines = {line.split()[0]: line for line in describe_keys().splitlines()[1:]}
    assert "0 = off" in lines["algorithm.slowmo_tau"] and "algorithm.slowmo_alpha" in lines
    cfg = small()
    assert cfg.algorithm.slowmo_tau == 0
    from qgm_ray import build
    assert not isinstance(build.build_algorithm(cfg), SlowMo)
    assert isinstance(build.build_algorithm(small("algorithm.slowmo_tau=2", "algorithm.name=dsgd")), SlowMo)


# ------------------------------------------------------------------ Ray == local, bit for bit


@pytest.mark.ray
@pytest.mark.parametrize("topology", ["ring", "random_peer"])
def test_ray_engine_with_slowmo_equals_local_engine_bit_for_bit(ray_session, topology):
    """2 actors of 2 clients; tau = 2 puts outer rounds inside chunks (0, 2, 6, 8) and at a
    chunk's last round (4): both code paths of the coordinator. Then a state round trip
    (replay) and elastic resizes (joiners adopting the slow state), all compared exactly;
    on a ring and on a directed graph (push-sum weights in the average, checkpointed)."""
    pytest.importorskip("ray")
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = small("algorithm.slowmo_tau=2", "algorithm.slowmo_beta=0.6", "ray.clients_per_actor=2",
                "elastic.max_clients=4", "backend=ray", f"topology.name={topology}")
    ds, parts = runner.prepare(cfg, log=quiet)
    local, ray_engine = LocalEngine(cfg, ds, parts), RayEngine(cfg, ds, parts, log=quiet)

    def same():
        a, b = local.state_dict(), ray_engine.state_dict()
        assert a["slots"] == b["slots"]
        for sa, sb in zip(a["clients"], b["clients"]):
            assert torch.equal(sa["params"], sb["params"])
            for key in sa["algorithm"]:
                assert torch.equal(sa["algorithm"][key], sb["algorithm"][key]), key
            assert sa.keys() == sb.keys()
            if "push_sum_weight" in sa:
                assert torch.equal(sa["push_sum_weight"], sb["push_sum_weight"])

    try:
        for rounds in (range(0, 5), range(5, 9)):
            assert local.train(rounds, lr_of) == ray_engine.train(rounds, lr_of)
            same()
        saved = ray_engine.state_dict()
        first = ray_engine.train(range(9, 12), lr_of)
        ray_engine.load_state_dict(saved)
        assert ray_engine.train(range(9, 12), lr_of) == first == local.train(range(9, 12), lr_of)
        same()
        for n, rounds in ((3, range(12, 14)), (4, range(14, 17))):
            local.resize(n, rounds.start)
            ray_engine.resize(n, rounds.start)
            assert local.train(rounds, lr_of) == ray_engine.train(rounds, lr_of)
            same()
        assert bool((local.params == local.params[0]).all())   # round 16 was an outer round
    finally:
        ray_engine.close()
