"""The run's start-up record (qgm_ray/runner/startup.py, summary.json's `startup`) and the
bench that reads it (bench/startup.py). No timed assertions: only what is reached, in order."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bench import startup as bench_startup
from qgm_ray.cli import parse_args
from qgm_ray.config import from_dict, config_dict
from qgm_ray.runner import run as runner
from qgm_ray.runner.startup import PHASES, Startup
from tests.helpers import ROOT, small_run


def small(*extra):
    return from_dict(config_dict(None, small_run("topology.n_clients=4", "schedule.epochs=1",
                                                 "eval.every_epochs=1", *extra)))


def test_the_process_start_falls_between_spawning_the_process_and_its_first_line():
    """A fresh interpreter's start, read by itself, lies between this process's clock before
    spawning it and the child's own clock once it runs (the kernel counts in ticks of 10 ms)."""
    before = time.time()
    out = subprocess.run([sys.executable, "-c", "import time; from qgm_ray.runner.startup import process_start; "
                          "print(process_start(), time.time())"], cwd=ROOT, capture_output=True, text=True, check=True)
    started, child_now = map(float, out.stdout.split())
    assert before - 0.02 <= started <= child_now


def test_a_phase_keeps_the_first_time_it_is_reached_and_the_record_is_in_phase_order():
    s = Startup(start=time.time() - 10.0)
    s.mark("engine")
    s.mark("run")
    first = s.seconds()["engine"]
    time.sleep(0.01)
    s.mark("engine")
    out = s.seconds()
    assert list(out) == ["run", "engine"] and out["engine"] == first
    assert 10.0 <= out["run"] and 10.0 <= out["engine"]
    with pytest.raises(ValueError, match="unknown start-up phase 'ray_up'"):
        s.mark("ray_up")


def _assert_ordered(record: dict, expected: list) -> None:
    assert list(record) == expected
    times = list(record.values())
    assert times == sorted(times) and times[0] > 0


def test_a_local_run_writes_its_phases_into_the_summary(tmp_path):
    summary = runner.run(small("backend=local"), tmp_path / "r", log=lambda m: None)
    written = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert written["startup"] == summary["startup"]
    _assert_ordered(summary["startup"], [p for p in PHASES if p != "ray"])


@pytest.mark.ray
def test_a_ray_run_also_marks_rays_start(tmp_path, ray_session):
    summary = runner.run(small("backend=ray", "ray.clients_per_actor=4"), tmp_path / "r", log=lambda m: None)
    _assert_ordered(summary["startup"], list(PHASES))


def test_the_bench_runs_main_py_and_tables_the_medians(tmp_path, monkeypatch):
    """One real `python main.py` (a small local run), read back as the bench reports it."""
    monkeypatch.setattr(bench_startup, "SCHEDULE", tuple(small_run("topology.n_clients=4", "schedule.epochs=1",
                                                                   "eval.every_epochs=1")))
    monkeypatch.setattr(bench_startup, "BACKENDS", ("local",))
    monkeypatch.setitem(bench_startup.REPEATS, "quick", 1)
    out = tmp_path / "startup.json"
    assert bench_startup.main(quick=True, output=str(out)) == 0
    (record,) = json.loads(out.read_text())["records"]
    (one,) = record["runs"]
    _assert_ordered(one, ["run", "data", "engine", "first_round", "end", "exit"])
    assert record["median"] == {k: round(v, 2) for k, v in one.items()}
    assert out.with_suffix(".md").read_text().count("| local |") == 1


def test_medians_skip_the_phases_a_backend_does_not_reach():
    runs = [{"run": 1.0, "ray": 3.0, "exit": 9.0}, {"run": 2.0, "exit": 7.0}, {"run": 4.0, "ray": 5.0, "exit": 8.0}]
    assert bench_startup.medians(runs) == {"run": 2.0, "ray": 4.0, "exit": 8.0}


def test_bench_takes_the_startup_flag():
    args = parse_args(["bench", "--startup", "--quick"])
    assert args.startup and args.quick and not args.ceiling


def test_a_cached_mnist1d_loads_without_importing_the_package(tmp_path, monkeypatch):
    """Generating needs the mnist1d package (matplotlib, scipy); a cache hit needs only the file."""
    from qgm_ray.data import load_dataset

    made = load_dataset("mnist1d", root=str(tmp_path), seed=3, num_samples=200)
    for name in [m for m in sys.modules if m == "mnist1d" or m.startswith("mnist1d.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mnist1d", None)   # an import of it now raises ImportError
    cached = load_dataset("mnist1d", root=str(tmp_path), seed=3, num_samples=200)
    assert all(getattr(made, k).equal(getattr(cached, k)) for k in ("train_x", "train_y", "test_x", "test_y"))
    assert len(made.train_x) == 160
    with pytest.raises(ImportError):   # the block is real: a new set would need the package
        load_dataset("mnist1d", root=str(tmp_path), seed=4, num_samples=200)
