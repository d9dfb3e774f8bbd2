"""End to end through `python main.py`, as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main_py(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_help_explains_itself():
    out = main_py("--help")
    assert out.returncode == 0
    for word in ("run", "tune", "report", "bench", "--set", "--config"):
        assert word in out.stdout
    run_help = main_py("run", "--help").stdout
    assert "--resume" in run_help and "--output-dir" in run_help


def test_end_to_end_small_run(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(
        "name: e2e\nbackend: local\n"
        "data: {name: mnist1d, batch_size: 16, alpha: 0.5, root: " + str(tmp_path / "data") + ", options: {num_samples: 1000}}\n"
        "model: {name: cnn1d}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: qg_dsgdm_n, lr: 0.1}\nschedule: {epochs: 2}\neval: {every_epochs: 1}\n")
    out = main_py("--config", str(cfg), "--output-dir", str(tmp_path / "run"), "--set", "seed=1")
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "summary.json", "partition.csv"):
        assert (run / name).is_file()
    assert list((run / "checkpoints").glob("round_*.pt"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["n_clients"] == 4
    assert 0 <= summary["final_test_accuracy"] <= 1
    assert "summary" in out.stdout and str(run) in out.stdout
    assert "seed: 1" in (run / "config.yaml").read_text()
    assert len((run / "partition.csv").read_text().splitlines()) == 5


def test_bad_config_is_one_line_exit_2_and_nothing_written(tmp_path):
    out = main_py("--set", "data.alpha=-1", "--output-dir", str(tmp_path / "never"))
    assert out.returncode == 2
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "data.alpha" in lines[0]
    assert not (tmp_path / "never").exists()


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    out = main_py("--resume", str(tmp_path))
    assert out.returncode == 2 and "not a run directory" in out.stderr
