"""End to end through `python main.py`, as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

from helpers import main_py

ROOT = Path(__file__).resolve().parent.parent


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
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "data.alpha" in lines[0]
    assert not (tmp_path / "never").exists()


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    out = main_py("--resume", str(tmp_path))
    assert out.returncode == 2 and "not a run directory" in out.stderr


# ---------------------------------------------------------------- issue 10: hardening

import csv  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

TINY = ("name: tiny\nbackend: local\nprogress: false\n"
        "data: {name: synthetic, batch_size: 16, alpha: 1.0, root: DATA}\n"
        "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: 40}\neval: {every_epochs: 1, local_models: false}\n")


def tiny_config(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("DATA", str(tmp_path / "data")))
    return p


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def start_and_signal(cfg, out, sig, twice=False):
    """Start `main.py` and send `sig` once its first round is done (metrics.csv appears)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "--output-dir", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t0 = time.time()
    while not (out / "metrics.csv").exists():
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    if twice:
        time.sleep(0.3)
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


BAD_MAIN = [
    ["--set", "seed=-1"],
    ["--set", "schedule.epochs=.inf"],
    ["--set", "data.options.num_samples=-5"],
    ["--set", "name=../../x"],
    ["--set", "tune.metric=acc"],
    ["--set", "algorithm.lr=.inf"],
    ["--set", "model.options.hidden=abc", "--set", "model.name=mlp"],
]


@pytest.mark.parametrize("args", BAD_MAIN, ids=[a[1] for a in BAD_MAIN])
def test_bad_inputs_are_one_line_exit_2_nothing_written(tmp_path, args):
    out = main_py(*args, "--output-dir", str(tmp_path / "never"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert one_line(out.stderr).startswith("config error: ")
    assert not (tmp_path / "never").exists() and not (tmp_path / "runs").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    out = main_py("--config", str(tiny_config(tmp_path)), "--set", "device=cuda", "--output-dir", str(tmp_path / "n"))
    assert out.returncode == 2 and "device=cuda" in one_line(out.stderr)
    assert not (tmp_path / "n").exists()


def test_output_dir_of_another_run_is_refused_naming_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("round\n1\n")
    out = main_py("--config", str(tiny_config(tmp_path)), "--output-dir", str(run))
    assert out.returncode == 2
    assert f"--resume {run}" in one_line(out.stderr)
    assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]
    f = tmp_path / "afile"
    f.write_text("x")
    out = main_py("--config", str(tiny_config(tmp_path)), "--output-dir", str(f))
    assert out.returncode == 2 and "is a file" in one_line(out.stderr)


def test_config_command_prints_the_resolved_validated_config(tmp_path):
    out = main_py("config", "--set", "data.name=cifar10", "--set", "algorithm.lr=0.3")
    assert out.returncode == 0, out.stderr
    import yaml
    d = yaml.safe_load(out.stdout)
    assert d["data"]["name"] == "cifar10" and d["data"]["options"] == {} and d["algorithm"]["lr"] == 0.3
    assert d["backend"] == "ray"  # the built-in defaults are the default run
    bad = main_py("config", "--set", "seed=-1")
    assert bad.returncode == 2 and "seed" in one_line(bad.stderr)
    keys = main_py("config", "--keys")
    assert keys.returncode == 0 and "tune.grace_period_evals" in keys.stdout and "eval.batch_size" in keys.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_writes_summary_and_resume_finishes_the_same_run(tmp_path, sig):
    cfg = tiny_config(tmp_path)
    out = tmp_path / "run"
    rc, stdout, stderr = start_and_signal(cfg, out, sig)
    assert rc == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and 0 < summary["rounds"] < 1000
    assert f"python main.py --resume {out}" in stdout
    assert any(p.name == f"round_{summary['rounds']:08d}.pt" for p in (out / "checkpoints").iterdir())
    if sig == signal.SIGINT:  # the resume reproduces an uninterrupted run (once is enough)
        res = main_py("--resume", str(out))
        assert res.returncode == 0, res.stderr[-2000:]
        # The uninterrupted run in this process (the Python API: the same config, the same
        # runner), without another interpreter start.
        import qgm_ray
        full = qgm_ray.run(cfg, output_dir=tmp_path / "full", log=None)
        assert full.summary["status"] == "completed"
        with open(out / "metrics.csv") as a, open(tmp_path / "full" / "metrics.csv") as b:
            ra, rb = list(csv.DictReader(a)), list(csv.DictReader(b))
        assert [(r["round"], r["test_accuracy"], r["train_loss"]) for r in ra] == \
            [(r["round"], r["test_accuracy"], r["train_loss"]) for r in rb]


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.slow])])
def test_a_second_signal_exits_at_once_without_a_traceback(tmp_path, backend):
    """The issue's case: two Ctrl-C 0.3 s apart on Ray printed 45 lines from ray.shutdown."""
    cfg = tiny_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("backend: local", f"backend: {backend}"))
    out = tmp_path / "run"
    rc, stdout, stderr = start_and_signal(cfg, out, signal.SIGINT, twice=True)
    # 130, or killed by the signal itself when it lands during interpreter shutdown (Python has
    # restored the default handler then); a shell reports both as 130.
    assert rc in (130, -signal.SIGINT)
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    assert len(stderr.splitlines()) <= 4, stderr   # Ray's token warning, the two stop lines
    assert json.loads((out / "summary.json").read_text())["status"] == "stopped"
    assert f"--resume {out}" in stdout + stderr


def test_bench_runs_from_main_py_only_the_package_never_imports_it():
    """bench/ lies outside the package: main.py hands its command to qgm_ray.cli; the package
    alone says where the harness is, in one line."""
    p = subprocess.run([sys.executable, "-c", "import sys; from qgm_ray.cli import main; "
                        "code = main(['bench', '--quick']); print('bench' in sys.modules); sys.exit(code)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout.strip() == "False"
    assert "run `python main.py bench` from a checkout" in one_line(p.stderr)
