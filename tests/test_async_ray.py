"""Asynchronous runs on the Ray engine (engine/async_ray.py): the local engine's numbers bit for
bit (metrics.csv equal but the wall clock: losses, accuracies, bytes, sim_seconds, staleness),
for asynchronous gossip and AD-PSGD, across actors of one and of two clients; a killed
ClientActor replayed, and a stopped run resumed, to the same numbers. Without Ray, the actors'
wave plan on graphs and blocks the Ray runs leave out (uneven blocks, four neighbours).

Tiny runs (4 clients, an MLP, synthetic data, 2 epochs of 13 rows), each run once per module
and shared: most of a Ray run's time is its actors importing torch."""
import threading

import numpy as np
import pytest
import torch

from qgm_ray import build
from qgm_ray.config import load_config
from qgm_ray.engine.actors import ClientActor, dataset_meta
from qgm_ray.engine.async_ray import Waves, WavePlan
from qgm_ray.engine.base import groups_of
from qgm_ray.engine.stage import exchange_stage
from qgm_ray.runner import run as runner

from qgm_ray.runner.metrics_file import METRIC_COLUMNS, OPTIONAL_COLUMNS, MetricsFile

from helpers import local_engine, quiet, read_metrics, replayable_metrics, small_run, stopped_copy

ray = pytest.importorskip("ray")

# Speeds, stragglers and messages slower than a step: rows of several waves, neighbours several
# versions behind (rings deeper than one), pairs across actors.
CLOCK = ("clock.mode=async", "clock.speed.sigma=0.5", "clock.stragglers.fraction=0.25", "clock.stragglers.slowdown=5",
         "clock.latency_ms=30", "clock.bandwidth_mbps=1")
RUN = (*CLOCK, "topology.n_clients=4", "schedule.epochs=2", "data.batch_size=32", "eval.every_epochs=0.5",
       "fault_tolerance.checkpoint_every=5", "fault_tolerance.keep=100")
CASES = {"dsgdm_n-k2": ("algorithm.name=dsgdm_n", "ray.clients_per_actor=2"),
         "qg_dsgdm_n-k1": ("algorithm.name=qg_dsgdm_n", "ray.clients_per_actor=1"),
         "ad_psgd-k2": ("algorithm.name=ad_psgd", "ray.clients_per_actor=2")}


def config(case: str, backend: str):
    return load_config(None, small_run(*RUN, *CASES[case], f"backend={backend}"))


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    """Each case's run directory on each engine, made on first use."""
    made = {}

    def get(case: str, backend: str):
        if (case, backend) not in made:
            d = tmp_path_factory.mktemp(f"{case}-{backend}") / "run"
            made[case, backend] = (runner.run(config(case, backend), d, log=quiet), d)
        return made[case, backend]
    return get


@pytest.mark.ray
@pytest.mark.parametrize("case", list(CASES))
def test_ray_equals_local_bit_for_bit(runs, case):
    (s_local, local), (s_ray, on_ray) = runs(case, "local"), runs(case, "ray")
    assert s_ray["status"] == "completed" and s_ray["backend"] == "ray"
    want = replayable_metrics(local)
    assert replayable_metrics(on_ray) == want
    assert s_ray["final_test_accuracy"] == s_local["final_test_accuracy"]
    # Not a run that would agree anyway: the clock spreads the steps and delays the messages.
    sim = [float(r["sim_seconds"]) for r in want]
    assert len(want) == 5 and sim == sorted(sim) and len(set(sim)) == 5
    if case.startswith("ad_psgd"):
        assert "staleness_mean" not in want[0]
    else:
        assert max(float(r["staleness_max"]) for r in want) >= 2, "rings deeper than one version"


@pytest.mark.ray
def test_a_killed_actor_is_replayed_to_the_same_numbers(runs, monkeypatch, tmp_path):
    """ray.kill of a ClientActor while the chunk after the first evaluation runs: the run
    restores its last checkpoint (the clients' rings, pending gradients and losses in it) and
    replays to the uninterrupted run's numbers."""
    _, local = runs("dsgdm_n-k2", "local")
    engines, logs, fired = [], [], []
    make = runner.make_engine

    def capture(*a, **k):
        engines.append(make(*a, **k))
        return engines[-1]
    monkeypatch.setattr(runner, "make_engine", capture)

    def on_eval(row):
        if not fired:
            fired.append(row["round"])
            threading.Timer(0.02, lambda: ray.kill(engines[0].actor_handles()[1])).start()

    s = runner.run(config("dsgdm_n-k2", "ray"), tmp_path / "run", on_eval=on_eval, log=logs.append)
    assert s["status"] == "completed", s["message"]
    assert engines[0].recoveries == 1 and any("recovered from" in m for m in logs), logs
    assert replayable_metrics(tmp_path / "run") == replayable_metrics(local)


@pytest.mark.ray
def test_a_stopped_run_resumes_to_the_uninterrupted_run(runs, tmp_path):
    """The AD-PSGD run as a driver stopped after its second checkpoint leaves it, resumed on
    Ray: the peers' models and the pending steps come back from the clients' states."""
    _, whole = runs("ad_psgd-k2", "ray")
    cut = int(read_metrics(whole)[1]["round"])
    d = stopped_copy(whole, tmp_path / "run", after_round=cut)
    assert len(read_metrics(d)) == 2
    s = runner.run(config("ad_psgd-k2", "ray"), d, resume=True, log=quiet)
    assert s["status"] == "completed"
    assert replayable_metrics(d) == replayable_metrics(whole)


def test_rows_after_a_truncation_to_no_row_write_their_optional_columns(tmp_path):
    """A recovery or a resume from a checkpoint before the first evaluation truncates
    metrics.csv to its header; an asynchronous run's rows still get their staleness columns."""
    m = MetricsFile(tmp_path / "metrics.csv")
    row = {**{c: 1 for c in METRIC_COLUMNS}, "staleness_mean": 0.5, "staleness_max": 2.0}
    m.append({**row, "round": 4})
    m.truncate_after(0)
    m.append({**row, "round": 6})
    m.append({**row, "round": 8})
    rows = m.read()
    assert [r["round"] for r in rows] == ["6", "8"]
    assert [r["staleness_max"] for r in rows] == ["2.0", "2.0"] and None not in rows[0]
    assert list(rows[0]) == METRIC_COLUMNS + OPTIONAL_COLUMNS


@pytest.mark.parametrize("rule", ["dsgdm_n", "ad_psgd"])
def test_bytes_crossing_nodes_are_the_events_messages_that_leave_their_node(rule):
    """Six clients on a ring in blocks of two, blocks 0 and 1 on one node, block 2 on another:
    a gossip payload counts once per other node holding an out-neighbour, AD-PSGD's exchange
    where the peer is on the other node; counted here event by event from W."""
    from qgm_ray import build
    from qgm_ray.engine.stage import exchange_stage
    cfg = load_config(None, small_run(*CLOCK, "topology.n_clients=6", f"algorithm.name={rule}"))
    rule_obj, topology = build.build_algorithm(cfg), build.build_topology(cfg, 6)
    ex = exchange_stage(cfg, rule_obj, topology, [[0, 1], [2, 3], [4, 5]], 100, 1600)
    s, W, pb = ex.schedule, topology.matrix(0), ex.payload_bytes
    node = ["a", "a", "a", "a", "b", "b"]
    for t in range(3):
        want = 0
        for e in s.events(t):
            i = int(s.client[e])
            if rule == "ad_psgd":
                want += 2 * pb * (node[int(s.peer[e])] != node[i])
            else:
                want += pb * len({node[j] for j in range(6) if j != i and W[j, i] != 0} - {node[i]})
        assert ex.cross_node_bytes(t, ["a", "a", "b"]) == want
    assert ex.cross_node_bytes(0, ["a", "a", "a"]) == 0 and want > 0


def in_hand(cfg, chunks, lr: float):
    """The Ray engine's asynchronous dataflow without Ray: its ClientActor class and its wave
    plan (`Waves`, the coordinator's), each call made in this process and its returns passed on
    as they are. Each chunk starts with the rings' copies, as a chunk of a Ray run does.
    Returns (every client's parameters, each row's loss)."""
    ds, parts = runner.prepare(cfg, log=quiet)
    arrays = [np.ascontiguousarray(t.numpy()) for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)]
    n = cfg.topology.n_clients
    groups = groups_of(n, cfg.ray.clients_per_actor)
    actors = [ClientActor(cfg, dataset_meta(ds), [np.asarray(p) for p in parts], 0, *arrays) for _ in groups]
    for actor, g in zip(actors, groups):
        actor.set_clients(g, g)
    block = actors[0].block
    ex = exchange_stage(cfg, block.algorithm, build.build_topology(cfg, n), groups, block.payload_size,
                        len(ds.train_x))

    def returns(out):
        return list(out) if isinstance(out, tuple) else [out]

    def call(b, deliver, post, pre, k):
        msg, refs = post if post is not None else (None, [])
        got = returns(actors[b].async_wave([(r, s) for _, r, s in deliver], msg, pre, *[x for x, _, _ in deliver],
                                           *refs))
        assert len(got) == k + 1
        return got

    losses = []
    for rows in chunks:
        waves = Waves(WavePlan(ex.schedule, ex.groups, ex.W(0)), len(actors), call)
        waves.begin(lambda b, positions: returns(actors[b].async_history(positions)),
                    lambda b, rings: actors[b].async_begin(*rings))
        for r in rows:
            row = np.empty(n)
            for rec in waves.row(r, lr):
                row[np.asarray(rec["events"], dtype=np.int64) - r * n] = rec["losses"]
            losses.append(float(np.mean(row)))
        waves.finish()
    return torch.cat([torch.from_numpy(a.params()[0]) for a in actors]), losses


@pytest.mark.parametrize("extra", [
    ("algorithm.name=dsgd", "topology.name=torus", "topology.n_clients=9", "ray.clients_per_actor=4"),
    ("algorithm.name=qg_dsgdm_n", "topology.n_clients=6", "ray.clients_per_actor=1"),
    ("algorithm.name=ad_psgd", "topology.name=torus", "topology.n_clients=9", "ray.clients_per_actor=4"),
    ("algorithm.name=ad_psgd", "topology.n_clients=6", "ray.clients_per_actor=1"),
], ids=["dsgd-torus9-k4", "qg_dsgdm_n-ring6-k1", "ad_psgd-torus9-k4", "ad_psgd-ring6-k1"])
def test_the_actors_wave_plan_equals_the_local_engine_bit_for_bit(extra):
    cfg = load_config(None, small_run(*CLOCK, "schedule.epochs=1", *extra))
    local = local_engine(cfg)
    want = [r.loss for r in local.train(range(7), lambda r: 0.05)]
    params, losses = in_hand(cfg, [range(0, 3), range(3, 7)], 0.05)
    assert losses == want and torch.equal(params, local.params)
    schedule = local.exchange.schedule
    assert max(len(schedule.waves(r)) for r in range(7)) > 1
    if schedule.kind == "gossip":
        assert schedule.history > 1, "versions delivered late enough to need a deeper ring"


@pytest.mark.ray
def test_a_stop_comes_at_a_row_boundary_and_the_rows_go_on_from_there(ray_session):
    """should_stop (what Ctrl-C sets) stops the waves at the end of a row with every started
    event finished; training on from there gives the local engine's rows and models."""
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = load_config(None, small_run(*RUN, *CASES["dsgdm_n-k2"], "backend=ray", "ray.max_inflight_rounds=2"))
    ds, parts = runner.prepare(cfg, log=quiet)
    local, engine = local_engine(cfg), RayEngine(cfg, ds, parts, log=quiet)
    try:
        seen = []
        got = engine.train(range(0, 12), lambda r: 0.05, on_round=lambda rec: seen.append(rec.round),
                           should_stop=lambda: len(seen) >= 3)
        assert 3 <= len(got) < 12 and [r.round for r in got] == list(range(len(got)))
        got += engine.train(range(len(got), 12), lambda r: 0.05)
        assert got == local.train(range(0, 12), lambda r: 0.05)
        assert engine.evaluate() == local.evaluate()
    finally:
        engine.close()
