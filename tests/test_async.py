"""Asynchronous gossip and AD-PSGD on the simulated clock (clock.mode: async;
qgm_ray/async_schedule.py, engine/async_run.py, algorithm ad_psgd): the schedule's arithmetic, the
engine against a plain event-by-event simulation with a heap, determinism, stop + --resume, the
refusals, and what metrics.csv holds."""
import heapq
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qgm_ray import async_schedule, build
from qgm_ray.algorithms import make_algorithm
from qgm_ray.algorithms.registry import ALGORITHMS
from qgm_ray.clock import ClockModel
from qgm_ray.config import load_config
from qgm_ray.errors import ConfigError
from qgm_ray.flat_model import load_params
from qgm_ray.runner import run as runner
from qgm_ray.runner.metrics_file import METRIC_COLUMNS
from qgm_ray.sampler import BatchSampler
from qgm_ray.topology import make_topology

from helpers import local_engine, quiet, read_metrics, replayable_metrics, small_run, stopped_copy

ASYNC = ("backend=local", "clock.mode=async")
HETERO = ("clock.speed.sigma=0.5", "clock.stragglers.fraction=0.2", "clock.stragglers.slowdown=5",
          "clock.latency_ms=30", "clock.bandwidth_mbps=1")


def config(*extra):
    return load_config(None, small_run(*ASYNC, *extra))


# ---------------------------------------------------------------- the schedule

def test_a_uniform_ring_steps_in_lockstep_one_version_behind():
    """Every client at speed 1: step m of everyone ends at (m + 1) step_seconds, a message
    (shorter than a step) has arrived by the next end, so every neighbour is one version behind,
    and a row is one wave of every client's step."""
    cfg = load_config(None, ["clock.step_seconds=0.125", "clock.latency_ms=1"])
    n, rows = 8, 5
    s = async_schedule.build(ClockModel.from_config(cfg, n), make_topology("ring", n).sparse(0), n, rows, 4000,
                             "gossip", 0)
    assert s.step.tolist() == np.repeat(np.arange(rows), n).tolist()
    assert s.client.tolist() == np.tile(np.arange(n), rows).tolist()
    assert s.finish.tolist() == np.repeat(0.125 * np.arange(1, rows + 1), n).tolist()
    assert [s.end_seconds(r) for r in range(rows)] == [0.125 * (r + 1) for r in range(rows)]
    assert s.staleness(0, rows) == (1.0, 1.0)
    assert all(len(s.waves(r)) == 1 for r in range(rows))
    assert s.row_bytes(0) == n * 2 * 4000


def test_a_message_slower_than_a_step_makes_staleness_grow_with_it():
    # 0.1 s steps, 0.25 s links: version m - 3 is the newest that has arrived at step m.
    cfg = load_config(None, ["clock.latency_ms=250"])
    n = 6
    s = async_schedule.build(ClockModel.from_config(cfg, n), make_topology("ring", n).sparse(0), n, 8, 4, "gossip", 0)
    late = s.step >= 3
    own = s.src[s.client] == s.client[:, None]
    lag = (s.step[:, None] - s.version)[late][~own[late]]
    assert set(lag.tolist()) == {3}
    early = s.version[~late][~own[~late]]
    assert set(early.tolist()) == {-1}, "before anything arrives, a step mixes the initial model"


def test_waves_respect_every_dependency_and_cover_each_row_once():
    cfg = load_config(None, list(HETERO))
    n, rows = 12, 6
    for kind in async_schedule.KINDS:
        s = async_schedule.build(ClockModel.from_config(cfg, n), make_topology("torus", 12).sparse(0), n, rows,
                                 4000, kind, 3)
        for r in range(rows):
            waves = s.waves(r)
            assert sorted(np.concatenate(waves).tolist()) == list(s.events(r))
            wave_of = {e: w for w, ev in enumerate(waves) for e in ev.tolist()}
            for e in s.events(r):
                deps = [d for d in s.deps[e].tolist() if d >= 0]
                assert all(d < e for d in deps) and (s.step[e] == 0 or deps), "its own previous step at least"
                assert all(wave_of[d] < wave_of[e] for d in deps if d in wave_of)
            for ev in waves:   # a wave touches each client once
                touched = s.client[ev].tolist() + (s.peer[ev].tolist() if kind == "pairwise" else [])
                assert len(touched) == len(set(touched))
        assert len(set(s.finish.tolist())) > n, "speeds and stragglers spread the steps out"


# ---------------------------------------------------------------- the engine against a plain simulation

def reference(cfg, rows):
    """The run as written in the module docstrings, one event at a time: a heap of each client's
    next step end, the messages each client sent with their send times, the newest arrived one
    mixed (else the initial model), or AD-PSGD's peer from the client's own stream; the
    gradients by a plain forward/backward of each client's own model copy."""
    ds, parts = runner.prepare(cfg, log=quiet)
    n, lr, wd, seed = cfg.topology.n_clients, cfg.algorithm.lr, 1e-4, cfg.seed
    pairwise = cfg.algorithm.name == "ad_psgd"
    model = build.build_model(cfg, ds)
    x0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    P = len(x0)
    W = make_topology(cfg.topology.name, n).matrix(0)
    clock = ClockModel.from_config(cfg, n)
    link = clock.latency + 4 * P / clock.bytes_per_second
    samplers = [BatchSampler(len(parts[i]), cfg.data.batch_size, seed=seed * 1_000_003 + i) for i in range(n)]
    shards = [(ds.train_x[torch.as_tensor(parts[i])], ds.train_y[torch.as_tensor(parts[i])]) for i in range(n)]
    peers = [np.random.default_rng([seed, async_schedule._PEER_STREAM, i]) for i in range(n)]

    def gradient(i, x):
        load_params(model, x, torch.zeros(0))
        model.zero_grad()
        idx = samplers[i].next()
        loss = F.cross_entropy(model(shards[i][0][idx]), shards[i][1][idx])
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()]), float(loss.detach())

    x = [x0.clone() for _ in range(n)]
    pending = [gradient(i, x[i]) for i in range(n)]
    sent = [[(-np.inf, x0.clone())] for _ in range(n)]          # (send time, payload), in version order
    steps = [0] * n
    heap = [(clock.compute_seconds(0, n)[i], i) for i in range(n)]
    heapq.heapify(heap)
    losses = []
    for _ in range(rows * n):
        f, i = heapq.heappop(heap)
        g, loss = pending[i]
        losses.append(loss)
        step = g.add(x[i], alpha=wd)
        if pairwise:
            nbrs = [j for j in range(n) if j != i and W[i, j] != 0]
            p = nbrs[int(np.floor(peers[i].random() * len(nbrs)))]
            avg = x[i].clone().add(x[p]).mul(0.5)
            x[p] = avg.clone()
            x[i] = avg.sub(step.mul(lr))
        else:
            payload = x[i].add(step, alpha=-lr)
            mixed = None
            for j in range(n):            # sources in increasing order
                if W[i, j] == 0:
                    continue
                v = payload if j == i else [p for t, p in sent[j] if t + link <= f and t < f][-1]
                w = torch.tensor([W[i, j]], dtype=torch.float32)
                mixed = v * w if mixed is None else mixed.addcmul(v, w)
            sent[i].append((f, payload))
            x[i] = mixed
        pending[i] = gradient(i, x[i])
        steps[i] += 1
        gap = 2 * link if pairwise else 0.0
        heapq.heappush(heap, (f + gap + clock.compute_seconds(steps[i], n)[i], i))
    return torch.stack(x), [float(np.mean(losses[r * n:(r + 1) * n])) for r in range(rows)]


@pytest.mark.parametrize("extra", [("algorithm.name=dsgd", "topology.n_clients=6"),
                                   ("algorithm.name=dsgd", "topology.n_clients=9", "topology.name=torus"),
                                   ("algorithm.name=ad_psgd", "topology.n_clients=6"),
                                   ("algorithm.name=dsgd", "topology.n_clients=8", "compute.pack_clients=true")])
def test_the_engine_equals_an_event_by_event_simulation_bit_for_bit(extra):
    cfg = config(*HETERO, "schedule.epochs=1", *extra)
    rows = 7
    engine = local_engine(cfg)
    records = engine.train(range(rows), lambda r: cfg.algorithm.lr)
    want_x, want_losses = reference(cfg, rows)
    assert torch.equal(engine.params, want_x)
    if engine.blocks[0].packed:   # vmap's loss of a row is summed otherwise than a lone forward's
        assert [r.loss for r in records] == pytest.approx(want_losses, rel=1e-6)
    else:
        assert [r.loss for r in records] == want_losses
    waves = [len(engine.exchange.schedule.waves(r)) for r in range(rows)]
    assert max(waves) > 1 and min(waves) < cfg.topology.n_clients, "rows in several waves of several clients"


def test_a_block_of_clients_equals_blocks_of_one():
    """The same run held as one block of 6 rows and as six blocks of one: a client's numbers do
    not depend on which rows step with it."""
    keys = (*HETERO, "schedule.epochs=1", "topology.n_clients=6", "algorithm.name=qg_dsgdm_n")
    got = []
    for k in (6, 1):
        engine = local_engine(config(*keys, f"ray.clients_per_actor={k}"))
        assert len(engine.blocks) == 6 // k
        engine.train(range(6), lambda r: 0.05)
        got.append(engine.params)
    assert torch.equal(got[0], got[1])


def test_a_stop_comes_at_a_row_boundary_and_training_goes_on_from_there():
    cfg = config(*HETERO, "schedule.epochs=1", "topology.n_clients=6", "algorithm.name=qg_dsgdm_n")
    whole, parts = local_engine(cfg), local_engine(cfg)
    want = whole.train(range(6), lambda r: 0.05)
    calls = iter(range(100))
    got = parts.train(range(6), lambda r: 0.05, should_stop=lambda: next(calls) >= 2)
    assert [r.round for r in got] == [0, 1]
    got += parts.train(range(2, 6), lambda r: 0.05)
    assert got == want and torch.equal(parts.params, whole.params)


# ---------------------------------------------------------------- runs

RUN = (*HETERO, "topology.n_clients=6", "schedule.epochs=4", "eval.every_epochs=1",
       "fault_tolerance.checkpoint_every=7", "fault_tolerance.keep=100", "algorithm.name=qg_dsgdm_n")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("async") / "run"
    runner.run(config(*RUN), d, log=quiet)
    return d


def test_a_run_writes_staleness_and_the_schedules_time(full):
    got = read_metrics(full)
    assert list(got[0])[:len(METRIC_COLUMNS)] == METRIC_COLUMNS
    assert list(got[0])[len(METRIC_COLUMNS):] == ["staleness_mean", "staleness_max"]
    cfg = config(*RUN)
    engine = local_engine(cfg)
    s = engine.exchange.schedule
    last = 0
    for r in got:
        rnd = int(r["round"])
        assert float(r["sim_seconds"]) == s.end_seconds(rnd - 1)
        assert (float(r["staleness_mean"]), float(r["staleness_max"])) == s.staleness(last, rnd)
        assert int(r["n_clients"]) == 6
        last = rnd
    assert float(got[-1]["staleness_max"]) > 1 and float(got[-1]["test_accuracy"]) > 0.3


def test_the_same_config_twice_gives_the_same_metrics(full, tmp_path):
    runner.run(config(*RUN), tmp_path / "again", log=quiet)
    assert replayable_metrics(tmp_path / "again") == replayable_metrics(full)


def test_a_resume_equals_the_uninterrupted_run(full, tmp_path):
    d = stopped_copy(full, tmp_path / "run", after_round=21)
    runner.run(config(*RUN), d, resume=True, log=quiet)
    assert replayable_metrics(d) == replayable_metrics(full)


def test_ad_psgd_runs_and_writes_no_staleness(tmp_path):
    runner.run(config(*HETERO, "topology.n_clients=4", "schedule.epochs=1", "eval.every_epochs=0.5",
                      "algorithm.name=ad_psgd"), tmp_path / "r", log=quiet)
    got = read_metrics(tmp_path / "r")
    assert list(got[0]) == METRIC_COLUMNS and len(got) >= 2
    sims = [float(r["sim_seconds"]) for r in got]
    assert all(b > a > 0 for a, b in zip(sims, sims[1:]))


def test_a_synchronous_metrics_file_keeps_its_columns(tmp_path):
    runner.run(load_config(None, small_run("backend=local", "topology.n_clients=4", "schedule.epochs=1")),
               tmp_path / "r", log=quiet)
    assert list(read_metrics(tmp_path / "r")[0]) == METRIC_COLUMNS


# ---------------------------------------------------------------- the rule and the refusals

def test_ad_psgd_averages_first_then_steps():
    algo = make_algorithm("ad_psgd", weight_decay=0.1)
    x, g, peer = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]]), torch.tensor([[3.0, 0.0]])
    state = algo.init(x)
    payload = algo.pre_mix(state, x, g, 0.5)
    assert torch.equal(payload, x) and payload.data_ptr() != x.data_ptr()
    new = algo.post_mix(state, x, (payload + peer) / 2, 0.5)
    want = (x + peer) / 2 - 0.5 * (g + 0.1 * x)
    assert torch.allclose(new, want) and state["step"].tolist() == [1]
    momentum = make_algorithm("ad_psgd", momentum=0.9, weight_decay=0.0)
    state = momentum.init(x)
    for _ in range(2):
        momentum.pre_mix(state, x, g, 1.0)
    assert torch.allclose(state["step_taken"], g * 1.9)
    assert "ad_psgd" not in ALGORITHMS, "the synchronous rules every engine runs in rounds"


@pytest.mark.parametrize("keys, says", [
    (("algorithm.name=ad_psgd",), "algorithm.name=ad_psgd averages with one peer"),
    (ASYNC + ("algorithm.name=d2",), "needs a rule whose payload is its parameters"),
    (ASYNC + ("algorithm.name=centralized_sgdm",), "needs a rule whose payload is its parameters"),
    (ASYNC + ("topology.name=complete",), "topology.name=complete averages everyone"),
    (ASYNC + ("topology.name=time_varying_random_ring",), "needs the same W every round"),
    (ASYNC + ("topology.name=one_peer_exponential",), "needs the same W every round"),
    (ASYNC + ("compression.op=top_k", "compression.keep=0.1"), "set compression.op=none"),
    (ASYNC + ("algorithm.name=dsgdm", "algorithm.slowmo_tau=4"), "set algorithm.slowmo_tau=0"),
    (ASYNC + ("elastic.schedule=[[1, 8]]",), "needs the same clients all run"),
    (ASYNC + ("topology.n_clients=1",), "topology.n_clients must be >= 2"),
    (("clock.mode=sometimes",), "clock.mode='sometimes' is not allowed; choose one of sync, async"),
])
def test_what_an_async_run_cannot_mean_is_one_line(keys, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, list(keys))
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("sweep", ["sync", "async"])
def test_the_study_configs_hold_only_valid_trials(sweep):
    """docs/results/async: every trial of each sweep is a config the run accepts (the check
    `tune` makes before preparing data), 18 each."""
    from qgm_ray.config import config_dict
    from qgm_ray.tune import grid_points, trial_config
    path = Path(__file__).resolve().parent.parent / "docs" / "results" / "async" / f"{sweep}.yaml"
    trials = [trial_config(config_dict(path), p) for p in grid_points(load_config(path).tune)]
    assert len(trials) == 18 and {t.clock.mode for t in trials} == {sweep}
    assert {t.clock.stragglers.fraction for t in trials} == {0.1}
