"""The command line refuses what it would otherwise ignore or guess: flags `tune --resume` cannot
honour, an empty --output-dir or --resume; `report` on a sweep with no trial is one line; a
finished sweep whose trial directory was deleted resumes to `finished`, not to a plea to be
resumed again."""
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from qgm_ray import tune as qtune
from qgm_ray.config import load_config
from qgm_ray.report import RESULT_COLUMNS

from helpers import main_py

ROOT = Path(__file__).resolve().parent.parent
TINY = ["name=tiny", "backend=local", "progress=false", "data.name=synthetic", "model.name=mlp",
        "model.options={hidden: [16]}", "topology.n_clients=4", "data.batch_size=16", "algorithm.lr=0.05",
        "schedule.epochs=1", "eval.every_epochs=1", "eval.local_models=false"]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.fixture
def sweep_dir(tmp_path):
    """What `tune --resume` accepts as a sweep before it loads anything: config.yaml and tune/."""
    d = tmp_path / "sweep"
    (d / qtune.EXPERIMENT).mkdir(parents=True)
    (d / qtune.EXPERIMENT / "tuner.pkl").write_bytes(b"")
    (d / "config.yaml").write_text("name: s\ntune: {grid: {seed: [0, 1]}}\n")
    return d


@pytest.mark.parametrize("flags,named", [
    (["--set", "seed=3"], "--set seed=3"),
    (["--output-dir", "elsewhere"], "--output-dir elsewhere"),
    (["--config", "configs/default.yaml"], "--config configs/default.yaml"),
], ids=["set", "output-dir", "config"])
def test_tune_resume_refuses_the_flags_it_would_ignore(sweep_dir, flags, named):
    before = sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("*"))
    res = main_py("tune", "--resume", str(sweep_dir), *flags)
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert line.startswith("config error: ") and named in line and "cannot go with it" in line
    assert not (ROOT / "elsewhere").exists()
    assert sorted(p.relative_to(sweep_dir) for p in sweep_dir.rglob("*")) == before


@pytest.mark.parametrize("args", [["run", "--output-dir", ""], ["tune", "--output-dir", ""], ["run", "--resume", ""],
                                  ["tune", "--resume", " "]],
                         ids=["run-output", "tune-output", "run-resume", "tune-resume"])
def test_an_empty_path_is_refused_not_replaced_by_the_default(tmp_path, args):
    res = main_py(*args, cwd=tmp_path)
    assert res.returncode == 2
    line = one_line(res.stderr)
    assert "an empty path" in line and args[1] in line
    assert list(tmp_path.iterdir()) == []   # no runs/<name>-<timestamp>/ made


def test_report_on_a_sweep_whose_results_csv_holds_only_its_header_is_one_line(tmp_path):
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "config.yaml").write_text("name: s\ntune: {grid: {seed: [0, 1]}}\n")
    (d / "results.csv").write_text(",".join(RESULT_COLUMNS) + "\n")
    res = main_py("report", str(d))
    assert res.returncode == 2 and "lists no trial (only its header)" in one_line(res.stderr)
    assert sorted(p.name for p in d.iterdir()) == ["config.yaml", "results.csv"]


# ---------------------------------------------------------------- a finished trial whose directory is gone

def test_a_finished_trial_without_its_directory_keeps_tunes_outcome():
    assert qtune._trial_status("TERMINATED", None, False, "completed") == "completed"
    assert qtune._trial_status("TERMINATED", None, False, "diverged") == "diverged"
    assert qtune._trial_status("TERMINATED", None, True, "running") == "stopped"      # ASHA
    assert qtune._trial_status("TERMINATED", None, False, "running") == "interrupted"
    assert qtune._trial_status("ERROR", "boom", False, "completed") == "failed"


def test_write_results_of_a_finished_sweep_with_a_trial_directory_deleted_is_complete(tmp_path):
    cfg = load_config(None, TINY + ["tune.grid={seed: [0, 1]}"])
    base = cfg.to_dict()
    sweep = tmp_path / "sweep"
    (sweep / qtune.TRIALS / "seed0_a").mkdir(parents=True)
    (sweep / qtune.TRIALS / "seed0_a" / "summary.json").write_text(json.dumps(
        {"status": "completed", "final_test_accuracy": 0.5, "best_test_accuracy": 0.6, "rounds": 25,
         "wall_seconds": 1.0}))
    last = {"status": "completed", "final_test_accuracy": 0.7, "best_test_accuracy": 0.8, "round": 25,
            "test_accuracy": 0.7, "wall_seconds": 1.0}
    results = [({"seed": 0}, "seed0_a", {**last, "trial_id": "a"}, None),
               ({"seed": 1}, "seed1_b", {**last, "trial_id": "b"}, None)]   # seed1_b: deleted
    lines = []
    out = qtune._write_results(sweep, base, cfg.tune, 2, results, {"a": "TERMINATED", "b": "TERMINATED"}, 0.0,
                               lines.append)
    assert out["complete"]
    df = out["results"].set_index("trial")
    assert list(df.loc[["seed0_a", "seed1_b"], "status"]) == ["completed", "completed"]
    assert df.loc["seed1_b", "final_test_accuracy"] == 0.7
    assert any("seed1_b: its run directory" in line and "is gone" in line for line in lines)
    assert not any("--resume" in line for line in lines)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.long
def test_tune_resume_of_a_finished_sweep_with_a_trial_directory_deleted_finishes(ray_session, tmp_path):
    """The sweep and both resumes are real `python main.py tune` drivers; they join the test
    session's Ray (what a sweep runs on is not the question here)."""
    import ray
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text(
        f"name: gone\nbackend: local\nprogress: false\n"
        f"data: {{name: synthetic, batch_size: 16, alpha: 1.0, root: {tmp_path / 'data'}}}\n"
        "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: 1}\neval: {every_epochs: 1, local_models: false}\n"
        "tune: {grid: {seed: [0, 1]}, max_concurrent_trials: 1}\n")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    first = main_py("tune", "--config", str(cfg_file), "--output-dir", str(sweep), env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    assert (sweep / qtune.SEAL).is_file()
    gone = sorted((sweep / qtune.TRIALS).iterdir())[0]
    shutil.rmtree(gone)
    for _ in range(2):   # and again: the answer does not change
        res = main_py("tune", "--resume", str(sweep), env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
        assert f"{gone.name}: its run directory" in res.stdout and "is gone" in res.stdout
        assert "--resume" not in res.stdout.replace(f"resuming sweep {sweep}", "")
        csv = pd.read_csv(sweep / "results.csv")
        assert list(csv["status"]) == ["completed", "completed"]
