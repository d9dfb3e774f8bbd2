"""Simulated time (qgm_ray/clock/, runner/timeline.py, the `clock:` section): the start-time
recursion against plain loops over a dense W, the ring all-reduce formula, the config's checks,
and sim_seconds in a run's metrics.csv, continued by a resume."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from qgm_ray import clock
from qgm_ray.clock import ClockModel
from qgm_ray.config import load_config
from qgm_ray.engine.exchange import Exchange
from qgm_ray.errors import ConfigError
from qgm_ray.runner import run as runner
from qgm_ray.runner import timeline
from qgm_ray.runner.checkpoints import CheckpointStore
from qgm_ray.runner.metrics_file import MetricsFile
from qgm_ray.topology import make_topology

from helpers import main_py, quiet, replayable_metrics, small_run, stopped_copy


def model(n_max=64, seed=0, *extra):
    cfg = load_config(None, list(extra) + [f"seed={seed}"])
    return ClockModel.from_config(cfg, n_max)


def exchange(name, n, payload_floats, centralized=False, **options):
    return Exchange(make_topology(name, n, seed=0, **options), centralized, [list(range(n))], payload_floats)


def run_clock(m, ex, rounds):
    start = np.zeros(ex.n)
    for t in range(rounds):
        start = timeline.one_round(start, m, ex, t)
    return start


def dense_reference(m, topo, payload_bytes, rounds):
    """The recursion as written, a plain loop over the dense W(t): client i starts round t+1 at
    the latest of its own step's end and each in-neighbour j's (W[i, j] != 0) step end plus
    latency plus bytes over bandwidth."""
    n = topo.n
    start = [0.0] * n
    for t in range(rounds):
        W = topo.matrix(t)
        compute = m.compute_seconds(t, n)
        nxt = []
        for i in range(n):
            best = start[i] + compute[i]
            for j in range(n):
                if j != i and W[i, j] != 0:
                    best = max(best, start[j] + compute[j] + (m.latency + payload_bytes / m.bytes_per_second))
            nxt.append(best)
        start = nxt
    return np.array(start)


# ---------------------------------------------------------------- the recursion

def test_a_uniform_ring_ends_round_r_at_r_times_step_latency_and_transfer():
    # Dyadic seconds: every partial sum is exact, so R additions equal one multiplication.
    P = 15625                                    # 62,500 bytes; 0.125 Mbps = 15,625 bytes/s: 4 s
    m = model(64, 0, "clock.step_seconds=0.125", "clock.latency_ms=250", "clock.bandwidth_mbps=0.125")
    ex = exchange("ring", 8, P)
    for R in (1, 7, 20):
        start = run_clock(m, ex, R)
        assert np.all(start == R * (0.125 + 0.25 + 4 * P / 15625))
    # The defaults, in floating point: the same up to rounding.
    m = model()
    start = run_clock(m, exchange("ring", 8, 1000), 50)
    assert start == pytest.approx(50 * (0.1 + 0.001 + 4000 / (1000e6 / 8)), rel=1e-12)


def test_a_compressed_exchange_sends_shorter_messages_and_the_clock_follows():
    """The bytes of each edge are the exchange stage's (engine/choco.py's wire size for CHOCO)."""
    from qgm_ray.engine import choco
    P, n = 10_000, 8
    cfg = load_config(None, ["compression.op=top_k", "compression.keep=0.01", "clock.bandwidth_mbps=1"])
    m = ClockModel.from_config(cfg, 64)
    compressed = choco.exchange_for(choco.Choco.of(cfg, 16_000), make_topology("ring", n), False, [list(range(n))],
                                    P, (), None)
    plain = exchange("ring", n, P)
    wire = compressed.payload_bytes_at(0)
    assert wire < plain.payload_bytes
    for ex, nbytes in ((compressed, wire), (plain, 4 * P)):
        assert run_clock(m, ex, 5) == pytest.approx(5 * (0.1 + 0.001 + nbytes / (1e6 / 8)), rel=1e-12)


@pytest.mark.parametrize("graph", [("torus", 9, {}), ("one_peer_exponential", 8, {}),
                                   ("time_varying_random_pair", 8, {}), ("social", 15, {"graph": "florentine_families"})])
def test_stragglers_speeds_and_a_trace_follow_the_recursion_on_a_dense_w(graph, tmp_path):
    name, n, options = graph
    trace = tmp_path / "trace.csv"
    trace.write_text("client,from_round,speed\n2,3,0.25\n2,6,4\n0,1,0.5\n")
    m = model(64, 3, "clock.speed.sigma=0.5", "clock.stragglers.fraction=0.25", "clock.stragglers.slowdown=5",
              "clock.stragglers.redraw=round", f"clock.trace={trace}", "clock.latency_ms=3", "clock.bandwidth_mbps=2")
    ex = exchange(name, n, 777, **options)
    got = run_clock(m, ex, 9)
    np.testing.assert_array_equal(got, dense_reference(m, ex.topology, ex.payload_bytes, 9))
    assert len(set(got.tolist())) > 1, "speeds and stragglers make clients start at different times"


def test_compute_seconds_straggler_count_speeds_and_trace():
    n = 20
    plain = model(64, 1, "clock.step_seconds=0.5").compute_seconds(0, n)
    assert np.all(plain == 0.5)
    fixed = model(64, 1, "clock.step_seconds=0.5", "clock.stragglers.fraction=0.25", "clock.stragglers.slowdown=4")
    slow = [fixed.compute_seconds(t, n) for t in range(5)]
    assert all(np.sum(s == 2.0) == 5 and np.sum(s == 0.5) == 15 for s in slow)
    assert all(np.array_equal(s, slow[0]) for s in slow), "fixed: the same clients every round"
    redraw = model(64, 1, "clock.step_seconds=0.5", "clock.stragglers.fraction=0.25", "clock.stragglers.slowdown=4",
                   "clock.stragglers.redraw=round")
    rounds = [redraw.compute_seconds(t, n) for t in range(5)]
    assert all(np.sum(s == 2.0) == 5 for s in rounds)
    assert len({tuple(s) for s in rounds}) > 1, "round: drawn anew"
    speeds = model(64, 1, "clock.speed.sigma=0.3").speeds
    assert np.all(speeds > 0) and np.std(np.log(speeds)) == pytest.approx(0.3, rel=0.3)
    # A client's speed factor does not depend on how many clients there are.
    assert np.array_equal(model(128, 1, "clock.speed.sigma=0.3").speeds[:64], speeds)


def test_trace_factors_hold_from_their_round_until_the_next():
    tr = clock.Trace(np.array([0, 0, 3]), np.array([2, 5, 0]), np.array([0.5, 2.0, 0.25]))
    assert tr.factors(0, 4).tolist() == [1, 1, 1, 0.25]
    assert tr.factors(2, 4).tolist() == [0.5, 1, 1, 0.25]
    assert tr.factors(9, 4).tolist() == [2.0, 1, 1, 0.25]
    assert tr.factors(9, 2).tolist() == [2.0, 1]        # clients beyond n are not in the run


def test_all_reduce_is_a_ring_all_reduce_behind_a_global_barrier():
    n, P = 8, 1000
    m = model(64, 0, "clock.stragglers.fraction=0.125", "clock.stragglers.slowdown=5", "clock.latency_ms=2",
              "clock.bandwidth_mbps=8")
    ex = exchange("ring", n, P, centralized=True)
    assert ex.all_reduce
    start = run_clock(m, ex, 3)
    # One straggler of 5 x 0.1 s gates every round; then 2 (n - 1) steps of (B / n) bytes each.
    per_round = 0.5 + 2 * (n - 1) * (0.002 + (4 * P / n) / 1e6)
    assert np.all(start == start[0])
    assert start[0] == pytest.approx(3 * per_round, rel=1e-12)
    assert m.allreduce_seconds(1, 4 * P) == 0


def test_the_same_seed_gives_the_same_clock_and_another_seed_another():
    keys = ("clock.speed.sigma=0.4", "clock.stragglers.fraction=0.3", "clock.stragglers.redraw=round")
    ex = exchange("ring", 16, 500)
    a, b, c = (run_clock(model(64, s, *keys), ex, 6) for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_resize_starts_joiners_with_the_last_client():
    assert clock.resized([1.0, 3.0, 2.0], 2).tolist() == [1.0, 3.0]
    assert clock.resized([1.0, 3.0], 4).tolist() == [1.0, 3.0, 3.0, 3.0]
    assert clock.resized([], 3).tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- the config

@pytest.mark.parametrize("key, value, says", [
    ("clock.step_seconds", "0", "clock.step_seconds must be > 0"),
    ("clock.latency_ms", "-1", "clock.latency_ms must be >= 0"),
    ("clock.bandwidth_mbps", "0", "clock.bandwidth_mbps must be > 0"),
    ("clock.speed.sigma", "-0.1", "clock.speed.sigma must be >= 0"),
    ("clock.stragglers.fraction", "1.5", "clock.stragglers.fraction must be in [0, 1]"),
    ("clock.stragglers.slowdown", "0.5", "clock.stragglers.slowdown must be >= 1"),
    ("clock.stragglers.redraw", "always", "clock.stragglers.redraw='always' is not allowed; choose one of fixed, round"),
    ("clock.speed.mu", "1", "unknown key 'clock.speed.mu'"),
    ("clock.trace", "/nonexistent/trace.csv", "clock.trace='/nonexistent/trace.csv': cannot be read"),
])
def test_a_bad_clock_key_is_one_line_naming_it(key, value, says):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, says", [
    ("client,speed\n0,1\n", "row 1 must be the header client,from_round,speed"),
    ("client,from_round,speed\n0,0,1\n1,x,2\n", "row 3, column from_round: expected an integer"),
    ("client,from_round,speed\n0,0,0\n", "row 2, column speed: must be a finite number > 0"),
    ("client,from_round,speed\n-1,0,1\n", "row 2, column client: must be >= 0"),
    ("client,from_round,speed\n0,0\n", "row 2 has 2 columns; expected 3"),
    ("client,from_round,speed\n0,4,1\n0,4,2\n", "row 3, columns client,from_round: client 0 has two rows for round 4"),
])
def test_a_bad_trace_is_one_line_naming_the_row_and_column(tmp_path, text, says):
    p = tmp_path / "trace.csv"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"clock.trace={p}"])
    assert f"clock.trace={str(p)!r}" in str(e.value) and says in str(e.value) and "\n" not in str(e.value)


def test_cli_refuses_a_bad_clock_key_with_exit_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = main_py("--set", "clock.stragglers.fraction=2", "--output-dir", str(out))
    assert res.returncode == 2 and "clock.stragglers.fraction must be in [0, 1]" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()


# ---------------------------------------------------------------- a run

CLOCKED = small_run("topology.n_clients=4", "schedule.epochs=4", "eval.every_epochs=1", "backend=local",
                    "fault_tolerance.checkpoint_every=5", "fault_tolerance.keep=100", "clock.speed.sigma=0.5",
                    "clock.stragglers.fraction=0.25", "clock.stragglers.redraw=round")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("clocked") / "run"
    runner.run(load_config(None, CLOCKED), d, log=quiet)
    return d


def test_a_run_writes_sim_seconds_as_the_recursion_gives_them(full):
    got = replayable_metrics(full)
    cfg = load_config(None, CLOCKED)
    m = ClockModel.from_config(cfg, 4)
    # The run's own payload: bytes per round over the ring's 8 directed edges.
    pb = int(got[0]["bytes_sent"]) // (int(got[0]["round"]) * 8)
    ex = exchange("ring", 4, pb // 4)
    ref = dense_reference(m, ex.topology, ex.payload_bytes, int(got[-1]["round"]))
    assert float(got[-1]["sim_seconds"]) == float(np.max(ref))
    sims = [float(r["sim_seconds"]) for r in got]
    assert all(b > a > 0 for a, b in zip(sims, sims[1:]))


def test_a_resume_continues_the_clock_of_the_uninterrupted_run(full, tmp_path):
    d = stopped_copy(full, tmp_path / "run", after_round=40)
    runner.run(load_config(None, CLOCKED), d, resume=True, log=quiet)
    assert replayable_metrics(d) == replayable_metrics(full)


def test_a_resume_refuses_a_changed_clock(full, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(full, d)
    (d / "summary.json").unlink()
    for p in CheckpointStore.of(d).list():
        if int(p.stem.split("_")[1]) > 40:
            p.unlink()
    with pytest.raises(ConfigError, match="clock.step_seconds"):
        runner.run(load_config(None, CLOCKED + ["clock.step_seconds=1"]), d, resume=True, log=quiet)


def test_a_metrics_file_without_sim_seconds_still_loads(tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text("round,epoch,lr,train_loss,test_accuracy\n10,1.0,0.1,0.5,0.8\n")
    df = MetricsFile(p).frame()
    assert list(df["round"]) == [10] and "sim_seconds" not in df.columns


@pytest.mark.ray
def test_ray_and_local_runs_keep_the_same_clock(ray_session, tmp_path):
    """The runner advances the clock from the engine's exchange stage: RayEngine's (built in the
    driver) must give what LocalEngine's gives, round barriers (SlowMo) included."""
    keys = small_run("topology.n_clients=4", "schedule.epochs=1", "eval.every_epochs=0.5", "ray.clients_per_actor=2",
                     "algorithm.name=dsgdm", "algorithm.slowmo_tau=3", "clock.speed.sigma=0.5",
                     "clock.stragglers.fraction=0.25", "clock.stragglers.redraw=round")
    sims = {}
    for backend in ("local", "ray"):
        runner.run(load_config(None, keys + [f"backend={backend}"]), tmp_path / backend, log=quiet)
        sims[backend] = [(r["round"], r["sim_seconds"]) for r in replayable_metrics(tmp_path / backend)]
    assert sims["ray"] == sims["local"] and float(sims["local"][-1][1]) > 0


def test_report_plots_accuracy_against_simulated_time_and_skips_older_runs(full, tmp_path):
    from qgm_ray import report
    written = report.make_report(full)
    assert (Path(full) / "accuracy_vs_time.png") in written and (Path(full) / "accuracy_vs_time.png").stat().st_size
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.csv").write_text("round,epoch,lr,train_loss,test_accuracy,consensus_distance\n"
                                     "10,1.0,0.1,0.5,0.8,0.01\n")
    written = report.make_report(old)
    assert (old / "curves.png") in written and not (old / "accuracy_vs_time.png").exists()


def test_a_sweep_report_tables_the_simulated_time_to_the_target(tmp_path):
    """Two rules x two seeds written by hand: the time table holds sim_seconds at each trial's
    first evaluation at the target (0.9 x the best mean final accuracy, 0.81 here)."""
    import json

    import pandas as pd
    import yaml

    from qgm_ray import report
    from qgm_ray.config import Config, trial_dict
    from qgm_ray.grid import points
    from qgm_ray.runner.metrics_file import METRIC_COLUMNS
    grid = {"algorithm.name": ["dsgd", "qg_dsgdm_n"], "seed": [0, 1]}
    curves = {"dsgd": ([0.2, 0.5, 0.7, 0.85], 1.0), "qg_dsgdm_n": ([0.3, 0.82, 0.88, 0.9], 1.5)}
    base = Config().to_dict()
    base.update(name="timed", backend="local")
    base["tune"]["grid"] = grid
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    for i, p in enumerate(points(grid)):
        accs, rate = curves[p["algorithm.name"]]
        trial = d / "trials" / f"t{i:02d}"
        trial.mkdir(parents=True)
        with open(trial / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            w.writeheader()
            for r, a in zip((8, 16, 24, 32), accs):
                w.writerow({"round": r, "epoch": r / 8, "lr": 0.1, "train_loss": 1.0, "test_accuracy": a,
                            "consensus_distance": 0.1, "bytes_sent": 100 * r, "wall_seconds": 1.0,
                            "n_clients": 4, "sim_seconds": rate * r})
        (trial / "config.yaml").write_text(yaml.safe_dump(trial_dict(base, p)))
        (trial / "summary.json").write_text(json.dumps({"status": "completed", "final_test_accuracy": accs[-1],
                                                        "best_test_accuracy": accs[-1], "rounds": 32}))
    report.make_report(d)
    df, histories = pd.read_csv(d / "results.csv"), pd.read_csv(d / "histories.csv")
    keys = report.param_keys_of(base)
    got = report.bytes_to_target(df, histories, keys, column="sim_seconds").set_index("algorithm")
    assert got.loc["dsgd", "bytes"] == 32.0 and got.loc["qg_dsgdm_n", "bytes"] == 24.0
    assert got["target"].tolist() == pytest.approx([0.81, 0.81]) and got["n_reached"].tolist() == [2, 2]
    table = (d / "table.md").read_text()
    assert "# Simulated time to reach the target accuracy" in table and "**24 s**" in table and "32 s" in table


def test_tune_may_optimise_the_simulated_time():
    cfg = load_config(None, ["tune.metric=sim_seconds", "tune.mode=min"])
    assert (cfg.tune.metric, cfg.tune.mode) == ("sim_seconds", "min")
