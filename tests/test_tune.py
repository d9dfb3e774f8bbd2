"""Ray Tune sweeps: a tiny grid end to end, resume without rerunning, diverged trials, ASHA search,
and every shipped config file loads."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from qgm_ray import tune as qtune
from qgm_ray.config import config_dict, from_dict, load_config
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

TINY = ["name=tiny", "backend=local", "progress=false", "data.name=synthetic", "model.name=mlp",
        "model.options={hidden: [16]}", "topology.n_clients=4", "data.batch_size=16", "algorithm.lr=0.05",
        "schedule.epochs=2", "eval.every_epochs=1", "eval.local_models=false"]


def tiny(*extra, root=None):
    overrides = TINY + list(extra)
    if root is not None:
        overrides.append(f"data.root={root}")
    return load_config(None, overrides)


def quiet(msg):  # keep pytest output readable; the lines are checked through the returned frame
    pass


def trial_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in (sweep / "trials").iterdir() if p.is_dir())


def starts(trial: Path) -> int:
    """How many times Tune started this trial (run_trial writes one line per start)."""
    return sum(line.startswith("trial ") for line in (trial / "log.txt").read_text().splitlines())


# ---------------------------------------------------------------- no Ray needed

@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_every_config_file_loads(path):
    cfg = from_dict(config_dict(path))
    # every grid point is a valid config, and each trial is a plain run (no tune section)
    for point in qtune.grid_points(cfg.tune)[:50]:
        qtune.trial_config(cfg.to_dict(), point)


def test_shipped_sweeps_have_the_promised_shape():
    het = from_dict(config_dict(ROOT / "configs" / "tune_heterogeneity.yaml"))
    assert qtune.count_trials(het.tune) == 45
    assert het.tune.grid["data.alpha"] == [10, 1, 0.1] and len(het.tune.grid["seed"]) == 3
    assert set(het.tune.grid["algorithm.name"]) == {"dsgd", "dsgdm_n", "qg_dsgdm_n", "d2", "gradient_tracking"}
    lr = from_dict(config_dict(ROOT / "configs" / "tune_lr.yaml"))
    assert lr.tune.scheduler == "asha" and "algorithm.lr" in lr.tune.search and lr.data.alpha == 0.1
    paper = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
    assert len(paper) >= 3
    names = {from_dict(config_dict(p)).model.name for p in paper}
    assert "resnet_evonorm20" in names


@pytest.mark.parametrize("name,topology,n", [("table1_ring16", "ring", 16), ("table1_social32", "social", 32)])
def test_table1_sweeps_validate_without_running(name, topology, n):
    """Table 1, tuned (docs/results/table1/): the promised grid, and every trial a valid run whose
    partitions fit the batch size (check_trials: what `tune` checks before starting Ray)."""
    cfg = from_dict(config_dict(ROOT / "configs" / "paper" / f"{name}.yaml"))
    grid = cfg.tune.grid
    assert list(grid["algorithm.name"]) == ["dsgd", "dsgdm_n", "qg_dsgdm_n", "d2", "gradient_tracking"]
    assert grid["data.alpha"] == [10, 1, 0.1] and len(grid["seed"]) >= 3
    assert len(grid["algorithm.lr"]) >= 4 and min(grid["algorithm.lr"]) <= 0.05 and max(grid["algorithm.lr"]) >= 1.0
    assert qtune.count_trials(cfg.tune) == 5 * 3 * len(grid["algorithm.lr"]) * len(grid["seed"])
    assert (cfg.topology.name, cfg.topology.n_clients, cfg.data.name, cfg.model.name, cfg.backend) == \
        (topology, n, "mnist1d", "cnn1d", "local")
    if topology == "social":
        assert cfg.topology.options == {"graph": "davis_southern_women"}
    assert cfg.tune.scheduler == "fifo" and cfg.schedule.epochs == 100
    qtune.check_trials(cfg.to_dict(), cfg.tune, log=quiet)


def test_trial_config_merges_dotted_values_and_drops_the_sweep():
    base = tiny("tune.grid={data.alpha: [1, 0.1]}").to_dict()
    cfg = qtune.trial_config(base, {"data.alpha": 10, "algorithm.name": "dsgd", "seed": 3})
    assert cfg.data.alpha == 10.0 and cfg.algorithm.name == "dsgd" and cfg.seed == 3
    assert cfg.tune.grid == {} and cfg.data.name == "synthetic"


def test_param_space_and_trial_count():
    from ray import tune
    cfg = tiny("tune.grid={data.alpha: [1, 0.1], seed: [0, 1, 2]}",
               "tune.search={algorithm.lr: {loguniform: [0.01, 1.0]}, algorithm.momentum: {choice: [0.0, 0.9]}}",
               "tune.num_samples=2")
    space = qtune.param_space(cfg.tune)
    assert space["data.alpha"] == tune.grid_search([1, 0.1])
    assert isinstance(space["algorithm.lr"], tune.search.sample.Float)
    assert qtune.count_trials(cfg.tune) == 12


def test_bad_grid_value_fails_before_any_trial(tmp_path):
    cfg = tiny("tune.grid={data.alpha: [1, -1]}")
    with pytest.raises(ConfigError, match="alpha"):
        qtune.run_sweep(cfg, output_dir=tmp_path / "s", log=quiet)
    cfg = tiny("tune.grid={data.batch_size: [16, 100000]}")
    with pytest.raises(ConfigError, match="batch_size"):
        qtune.run_sweep(cfg, output_dir=tmp_path / "s2", log=quiet)
    assert not (tmp_path / "s" / "tune").exists()


def test_trial_bundles():
    local = tiny()
    assert qtune.trial_bundles(local) == [{"CPU": 1.0}]
    ray_cfg = tiny("backend=ray", "topology.n_clients=8", "ray.clients_per_actor=4", "ray.cpus_per_client=0.25",
                   "ray.gpus_per_client=0.125")
    bundles = qtune.trial_bundles(ray_cfg, {"CPU": 2.0, "GPU": 1.0})
    # trial process (+ CPU-less coordinator), 2 ClientActors of 4 clients (the first also evaluates)
    assert bundles == [{"CPU": 0.5}, {"CPU": 1.0, "GPU": 0.5}, {"CPU": 1.0, "GPU": 0.5}]
    cpu_only = tiny("backend=ray", "topology.n_clients=4", "ray.cpus_per_client=0.125", "ray.clients_per_actor=1")
    assert qtune.trial_bundles(cpu_only) == [{"CPU": 0.5}] + [{"CPU": 0.125}] * 4
    # clients_per_actor auto: one actor per CPU core of the cluster (4 clients, 2 cores: 2 actors of 2)
    auto = tiny("backend=ray", "topology.n_clients=4", "ray.cpus_per_client=0.125")
    assert qtune.trial_bundles(auto, {"CPU": 2.0}) == [{"CPU": 0.5}] + [{"CPU": 0.25}] * 2
    with pytest.raises(ConfigError, match="needs 1 CPU"):
        qtune.check_fits(cpu_only.to_dict(), tiny("tune.grid={seed: [0]}").tune, {"CPU": 0.75})
    qtune.check_fits(cpu_only.to_dict(), tiny("tune.grid={seed: [0]}").tune, {"CPU": 2.0})


# ---------------------------------------------------------------- under Tune

@pytest.fixture(scope="module")
def tiny_sweep(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cfg = tiny("tune.grid={data.alpha: [10, 0.5], algorithm.name: [dsgd, qg_dsgdm_n], seed: [0]}",
               root=root / "data")
    out = qtune.run_sweep(cfg, output_dir=root / "sweep", log=quiet)
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_sweep_writes_results_and_table(tiny_sweep):
    sweep, df = tiny_sweep["sweep_dir"], tiny_sweep["results"]
    assert tiny_sweep["complete"]
    csv = pd.read_csv(sweep / "results.csv")
    assert len(csv) == 4 and len(df) == 4
    for col in ("algorithm", "alpha", "topology", "n_clients", "seed", "lr", "final_test_accuracy",
                "best_test_accuracy", "status", "trial_dir"):
        assert col in csv.columns
    assert set(csv["status"]) == {"completed"}
    assert sorted(set(csv["alpha"])) == [0.5, 10.0] and set(csv["algorithm"]) == {"dsgd", "qg_dsgdm_n"}
    assert ((csv["final_test_accuracy"] >= 0) & (csv["final_test_accuracy"] <= 1)).all()
    assert (csv["best_test_accuracy"] >= csv["final_test_accuracy"]).all()
    for _, r in csv.iterrows():  # the trial's own run directory, with the run outputs
        d = sweep / r["trial_dir"]
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["alpha"] == r["alpha"]
        assert summary["final_test_accuracy"] == pytest.approx(r["final_test_accuracy"])
        assert (d / "metrics.csv").is_file() and (d / "partition.csv").is_file()
    table = (sweep / "table.md").read_text()
    assert "| dsgd |" in table and "| qg_dsgdm_n |" in table and "α = 10" in table and "α = 0.5" in table
    for png in ("accuracy_vs_alpha.png", "curves_alpha0.5.png", "partitions.png"):
        assert (sweep / png).stat().st_size > 1000
    assert len(pd.read_csv(sweep / "histories.csv")) == 4 * 2  # 2 evaluations per trial


@pytest.mark.ray
@pytest.mark.slow
def test_resume_of_a_finished_sweep_reruns_nothing(tiny_sweep):
    sweep = tiny_sweep["sweep_dir"]
    before = {d.name: (d / "summary.json").stat().st_mtime_ns for d in trial_dirs(sweep)}
    out = qtune.run_sweep(load_config(None, []), resume_dir=sweep, log=quiet)
    assert len(out["results"]) == 4 and out["complete"]
    after = {d.name: (d / "summary.json").stat().st_mtime_ns for d in trial_dirs(sweep)}
    assert after == before
    assert all(starts(d) == 1 for d in trial_dirs(sweep))


def _start_sweep_driver(tmp_path, name: str):
    """A real `python main.py tune` of 3 tiny trials, one at a time, on the test session's Ray."""
    import ray

    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text(
        f"name: {name}\nbackend: local\nprogress: false\n"
        f"data: {{name: synthetic, batch_size: 16, alpha: 1.0, root: {tmp_path / 'data'}}}\n"
        "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: 8}\neval: {every_epochs: 2, local_models: false}\n"
        "tune: {grid: {seed: [0, 1, 2]}, max_concurrent_trials: 1}\n")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "tune", "--config", str(cfg_file),
                             "--output-dir", str(sweep)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return cfg_file, sweep, proc


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_sweep_resumes_without_redoing_finished_trials(ray_session, tmp_path, sig):
    """Ctrl+C (or SIGTERM, as Slurm / Kubernetes send) the sweep's driver (a real `python main.py
    tune`) after its first trial: results so far are written, the hint names `tune --resume`; resume."""
    cfg_file, sweep, proc = _start_sweep_driver(tmp_path, "interrupted")
    seen = []
    try:
        for line in proc.stdout:  # the driver prints "[1/3] ..." once Tune has the first trial done
            seen.append(line)
            if line.startswith("[1/3]"):
                break
        proc.send_signal(sig)
        output = "".join(seen) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, output[-3000:]  # as a shell reports a death by that signal
    assert f"python main.py tune --resume {sweep}" in output
    assert "Traceback" not in output and "SIGTERM received" not in output, output[-3000:]
    # Ours only: not Tune's "Stop signal received" nor its Tuner.restore(...) hint (issue 18)
    assert "Tuner.restore" not in output and "Stop signal" not in output, output[-3000:]
    so_far = pd.read_csv(sweep / "results.csv")
    assert "completed" in set(so_far["status"]) and (sweep / "table.md").is_file()
    assert set(so_far["status"]) <= {"completed", "interrupted"}, so_far   # not `stopped`: ASHA's word
    assert list(sweep.glob("trials/*/summary.json")), output[-3000:]
    not_done = 3 - int((so_far["status"] == "completed").sum())
    assert f"{not_done} of 3 trials not done" in output, output[-3000:]   # exact: cut short + not started

    done_dirs = [d for d in trial_dirs(sweep) if (d / "summary.json").exists()
                 and json.loads((d / "summary.json").read_text())["status"] == "completed"]
    assert 1 <= len(done_dirs) < 3, output[-3000:]   # interrupted after the first trial, before the last
    mtimes = {d.name: (d / "summary.json").stat().st_mtime_ns for d in done_dirs}

    import ray
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "tune", "--resume", str(sweep)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Failed to fetch" not in res.stdout + res.stderr and "FileNotFoundError" not in res.stdout + res.stderr
    out = {"results": pd.read_csv(sweep / "results.csv"), "complete": "sweep finished" in res.stdout}
    df = out["results"]
    assert out["complete"] and len(df) == 3 and set(df["status"]) == {"completed"}
    assert sorted(df["seed"]) == [0, 1, 2]
    for d in done_dirs:  # finished before the interruption: not run again
        assert (d / "summary.json").stat().st_mtime_ns == mtimes[d.name]
        assert starts(d) == 1
    assert len(trial_dirs(sweep)) == 3


@pytest.mark.ray
@pytest.mark.slow
def test_diverged_trial_is_a_result_not_an_error(ray_session, tmp_path):
    cfg = tiny("tune.grid={algorithm.lr: [0.05, 1.0e+6]}", "algorithm.name=dsgdm_n",
               root=tmp_path / "data")
    out = qtune.run_sweep(cfg, output_dir=tmp_path / "s", log=quiet)
    df = out["results"].set_index("lr")
    assert df.loc[1e6, "status"] == "diverged"
    assert df.loc[0.05, "status"] == "completed"
    summary = json.loads((tmp_path / "s" / df.loc[1e6, "trial_dir"] / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert not (tmp_path / "s" / df.loc[1e6, "trial_dir"] / "error.txt").exists()
    table = (tmp_path / "s" / "table.md").read_text()
    assert "1/2 diverged" in table and "lr 0.05" in table  # best lr per cell, the diverged one noted


@pytest.mark.ray
@pytest.mark.slow
def test_asha_search_samples_lr_and_reports_best_per_cell(ray_session, tmp_path):
    cfg = tiny("tune.search={algorithm.lr: {loguniform: [0.001, 0.5]}}", "tune.num_samples=3",
               "tune.scheduler=asha", "tune.grace_period_evals=1", "schedule.epochs=3",
               "tune.grid={algorithm.name: [dsgdm_n]}", root=tmp_path / "data")
    out = qtune.run_sweep(cfg, output_dir=tmp_path / "s", log=quiet)
    df = out["results"]
    assert len(df) == 3 and df["lr"].between(0.001, 0.5).all() and df["lr"].nunique() == 3
    assert set(df["status"]) <= {"completed", "stopped"} and "completed" in set(df["status"])
    done = df[df["status"] == "completed"]
    # Several lrs can tie on this easy task: the table must name one of the best.
    best_lrs = done.loc[done["final_test_accuracy"] == done["final_test_accuracy"].max(), "lr"]
    table = (tmp_path / "s" / "table.md").read_text()
    assert any(f"lr {lr:.3g}" in table for lr in best_lrs), (table, list(best_lrs))


@pytest.mark.ray
@pytest.mark.slow
def test_ray_backend_trial_runs_its_actors_inside_its_placement_group(ray_session, tmp_path):
    """backend ray: the trial reserves 0.5 + 2 x 0.5 + 0.25 = 1.75 of the 2 CPUs. Actors that escaped
    the trial's placement group would find 0.25 CPU free and wait forever (the timeout fails it)."""
    import ray

    cfg_file = tmp_path / "ray.yaml"
    cfg_file.write_text(
        "name: raytrial\nbackend: ray\nprogress: false\n"
        f"data: {{name: synthetic, batch_size: 16, alpha: 1.0, root: {tmp_path / 'data'}}}\n"
        "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: qg_dsgdm_n, lr: 0.05}\nschedule: {epochs: 2}\neval: {every_epochs: 1}\n"
        "ray: {clients_per_actor: 2, cpus_per_client: 0.25}\ntune: {grid: {seed: [0]}}\n")
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "tune", "--config", str(cfg_file),
                          "--output-dir", str(tmp_path / "s")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    df = pd.read_csv(tmp_path / "s" / "results.csv")
    assert list(df["status"]) == ["completed"]
    log = (tmp_path / "s" / df["trial_dir"][0] / "log.txt").read_text()
    assert "ClientActor" in log


@pytest.mark.ray
@pytest.mark.slow
def test_two_ctrl_c_exit_at_once_with_the_resume_hint(ray_session, tmp_path):
    cfg_file, sweep, proc = _start_sweep_driver(tmp_path, "twice")
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("[1/3]"):
                break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        output = "".join(seen) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert f"python main.py tune --resume {sweep}" in output.splitlines()[-1]


@pytest.mark.ray
@pytest.mark.slow
def test_a_trial_gives_the_numbers_of_main_py_with_the_same_config(ray_session, tmp_path):
    """A researcher re-running the best trial with main.py must get its numbers. The data is
    standardised with a reduction whose last bits depend on torch's thread count; a trial's
    process starts with OMP_NUM_THREADS=1, a shell with all cores: both now build data with
    compute.torch_threads. mnist1d (16000 x 40 values) is big enough for a threaded reduction."""
    import torch

    from qgm_ray.runner import run as runner

    overrides = ["name=same", "backend=local", "progress=false", f"data.root={tmp_path / 'data'}",
                 "topology.n_clients=4", "schedule.epochs=1", "eval.every_epochs=0.5",
                 "eval.local_models=false"]
    torch.set_num_threads(2)   # as a fresh `python main.py` in a shell on this machine
    cfg = load_config(ROOT / "configs" / "default.yaml", overrides)
    alone = runner.run(cfg, tmp_path / "main", log=quiet)
    sweep = qtune.run_sweep(load_config(ROOT / "configs" / "default.yaml", overrides + ["tune.grid={seed: [0]}"]),
                            output_dir=tmp_path / "s", log=quiet)
    trial = trial_dirs(tmp_path / "s")[0]
    a = pd.read_csv(tmp_path / "main" / "metrics.csv")
    b = pd.read_csv(trial / "metrics.csv")
    cols = ["round", "train_loss", "test_accuracy", "test_loss", "consensus_distance", "bytes_sent"]
    assert sweep["complete"] and len(a) == len(b) >= 2
    assert a[cols].equals(b[cols]), (a[cols], b[cols])
    assert alone["final_test_accuracy"] == json.loads((trial / "summary.json").read_text())["final_test_accuracy"]


def test_a_sweep_on_an_address_that_is_not_ray_writes_nothing(tmp_path):
    srv = __import__("socket").socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text("backend: local\ndata: {name: synthetic}\nmodel: {name: mlp}\ntune: {grid: {seed: [0]}}\n")
    try:
        out = subprocess.run([sys.executable, str(ROOT / "main.py"), "tune", "--config", str(cfg_file),
                              "--set", f"ray.address=127.0.0.1:{srv.getsockname()[1]}",
                              "--output-dir", str(tmp_path / "s")], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    finally:
        srv.close()
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "is not a Ray cluster's GCS" in lines[0], out.stderr
    assert not (tmp_path / "s").exists()


def test_the_names_an_older_sweeps_tune_state_holds_still_resolve():
    """Tune's state (tune/tuner.pkl) names qgm-ray's functions by module: a sweep written while
    qgm_ray.tune was one module resumes only while qgm_ray.tune.<name> still finds each."""
    for name in ("_trial_name", "describe_params", "trial_params", "_pct", "_mark_scheduler_stop", "seal_state",
                 "run_trial"):
        assert callable(getattr(qtune, name)), name


def test_trial_status_tells_a_scheduler_stop_from_an_interruption():
    assert qtune._trial_status("TERMINATED", None, scheduler_stopped=True) == "stopped"
    assert qtune._trial_status("TERMINATED", None) == "interrupted"   # Tune's cleanup after a signal
    assert qtune._trial_status("PENDING", None) == "interrupted"
    assert qtune._trial_status("RUNNING", None) == "interrupted"
    assert qtune._trial_status("ERROR", None) == "failed"


@pytest.mark.ray
def test_a_trial_bigger_than_the_cluster_writes_nothing_so_a_rerun_works(ray_session, tmp_path):
    """issue 18: `--set ray.cpus_per_client=100` wrote config.yaml before the check; a rerun was
    then refused and `tune --resume` said "not a sweep directory"."""
    cfg = tiny("backend=ray", "ray.cpus_per_client=100", "tune.grid={seed: [0]}", root=tmp_path / "data")
    with pytest.raises(ConfigError, match=r"needs 400\.5 CPU .* but the Ray cluster has \d+ CPU"):
        qtune.run_sweep(cfg, output_dir=tmp_path / "s", log=quiet)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_a_non_empty_sweep_dir_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "metrics.csv").write_text("round\n")
    with pytest.raises(ConfigError, match=r"not empty; continue the run there with `python main.py tune --resume"):
        qtune.run_sweep(tiny("tune.grid={seed: [0]}"), output_dir=tmp_path / "s", log=quiet)
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["metrics.csv"]
