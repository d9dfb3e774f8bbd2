"""The run directory has one writer, a resume continues exactly what was measured, and every
file problem is one line (exit 2) or a `failed` summary.json: never a traceback, a `.tmp` left
behind, or a run directory left by a run that wrote nothing else (issue 18, items 2 and 3)."""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qgm_ray import report
from qgm_ray.runner import run as runner
from qgm_ray.config import load_config
from qgm_ray.errors import ConfigError
from qgm_ray.outputs import RunDir
from qgm_ray.runner.checkpoints import CheckpointStore
from qgm_ray.runner.metrics_file import MetricsFile

from helpers import main_py, quiet, small_run

ROOT = Path(__file__).resolve().parent.parent
SMALL = small_run("topology.n_clients=4", "schedule.epochs=4", "eval.every_epochs=1", "backend=local",
                  "fault_tolerance.checkpoint_every=5", "fault_tolerance.keep=100")
TINY = ("name: tiny\nbackend: local\nprogress: false\n"
        "data: {name: synthetic, batch_size: 16, alpha: 1.0, root: DATA}\n"
        "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: EPOCHS}\n"
        "eval: {every_epochs: 1, local_models: false}\nfault_tolerance: {checkpoint_every: 25, keep: 100}\n")


def small(*extra):
    return load_config(None, SMALL + list(extra))


def tiny_config(tmp_path, epochs=4):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("DATA", str(tmp_path / "data")).replace("EPOCHS", str(epochs)))
    return p


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


def rows(path):
    with open(Path(path) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in csv.DictReader(f)]


def snapshot(path):
    return {p.relative_to(path): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(Path(path).rglob("*"))
            if p.is_file()}


def tmp_files(path):
    return [p for p in Path(path).rglob("*.tmp*")]


def cut_back(d, keep_rounds_upto):
    """What a driver killed mid-run leaves: no summary, no checkpoint or row after the cut."""
    rd = RunDir(d)
    for p in CheckpointStore.of(rd.path).list():
        if int(p.stem.split("_")[1]) > keep_rounds_upto:
            p.unlink()
    MetricsFile.of(rd.path).truncate_after(keep_rounds_upto)
    (Path(d) / "summary.json").unlink()


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run of SMALL: what every resumed run must reproduce."""
    d = tmp_path_factory.mktemp("full") / "run"
    summary = runner.run(small(), d, log=quiet)
    return {"dir": d, "summary": summary, "rows": rows(d)}


@pytest.fixture
def stopped(full, tmp_path):
    """A copy of the full run as a driver killed after round 40 leaves it."""
    d = tmp_path / "run"
    shutil.copytree(full["dir"], d)
    cut_back(d, 40)
    return d


# ================================================================ one writer

def test_a_live_run_holds_its_directory_and_death_releases_it(stopped):
    holder = RunDir(stopped)
    holder.lock()           # another process's lock, as far as this process's new descriptors go
    try:
        before = snapshot(stopped)
        with pytest.raises(ConfigError, match="in use by a live run") as e:
            runner.run(small(), stopped, resume=True, log=quiet)
        assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match="in use by a live run"):
            runner.run(small(), stopped, log=quiet)   # a new run there
        assert snapshot(stopped) == before
    finally:
        holder.unlock()     # what the kernel does when the holder dies
    assert runner.run(small(), stopped, resume=True, log=quiet)["status"] == "completed"
    RunDir(stopped).lock()  # the run released it when it ended


def test_resume_of_a_live_run_is_refused_in_one_line_and_sigkill_releases_it(tmp_path):
    # Long enough to be live through both refusals (200 epochs ended within them once in CI);
    # it is killed below.
    cfg = tiny_config(tmp_path, epochs=20000)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "--output-dir", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not (out / "metrics.csv").exists():
            assert proc.poll() is None and time.time() - t0 < 120
            time.sleep(0.05)
        res = main_py("--resume", str(out))
        assert res.returncode == 2 and "in use by a live run" in one_line(res.stderr)
        again = main_py("--config", str(cfg), "--output-dir", str(out))
        assert again.returncode == 2 and "in use by a live run" in one_line(again.stderr)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    # SIGKILL: no handler ran, yet the kernel dropped the lock with the process.
    rd = RunDir(out)
    rd.lock()
    rd.unlock()


# ================================================================ what a resume may change

def test_resume_refuses_a_change_of_what_is_measured_and_touches_nothing(stopped):
    before = snapshot(stopped)
    for key in ("eval.max_test_samples=50", "eval.every_epochs=2", "eval.local_models=false", "algorithm.lr=0.5",
                "schedule.epochs=5", "seed=3"):
        with pytest.raises(ConfigError, match="must measure what it started measuring") as e:
            runner.run(small(key), stopped, resume=True, log=quiet)
        assert key.split("=")[0] in str(e.value) and "\n" not in str(e.value)
    assert snapshot(stopped) == before


def test_resume_may_change_how_it_runs(stopped, full):
    """backend, ray.*, fault_tolerance.*, progress change nothing measured: accepted."""
    s = runner.run(small("fault_tolerance.checkpoint_every=7", "fault_tolerance.keep=3"), stopped, resume=True,
                   log=quiet)
    assert s["status"] == "completed" and rows(stopped) == full["rows"]
    assert "checkpoint_every: 7" in (stopped / "config.yaml").read_text()


def test_resume_of_a_completed_run_is_refused_and_touches_nothing(full, tmp_path):
    d = tmp_path / "done"
    shutil.copytree(full["dir"], d)
    before = snapshot(d)
    with pytest.raises(ConfigError, match="the run has completed"):
        runner.run(small(), d, resume=True, log=quiet)
    (d / "summary.json").unlink()   # the final checkpoint alone says so too
    with pytest.raises(ConfigError, match="the run has completed"):
        runner.run(small(), d, resume=True, log=quiet)
    assert {k: v for k, v in snapshot(d).items() if k.name != "summary.json"} == \
        {k: v for k, v in before.items() if k.name != "summary.json"}


def test_cli_resume_refuses_config_output_dir_and_measured_overrides(full, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(full["dir"], d)
    cut_back(d, 40)
    before = snapshot(d)
    for extra, words in ((["--config", str(ROOT / "configs" / "default.yaml")], "--config"),
                         (["--output-dir", str(tmp_path / "elsewhere")], "--output-dir"),
                         (["--set", "eval.max_test_samples=50"], "eval.max_test_samples: 0 -> 50")):
        out = main_py("--resume", str(d), *extra)
        assert out.returncode == 2, out.stderr[-2000:]
        assert words in one_line(out.stderr)
    assert snapshot(d) == before and not (tmp_path / "elsewhere").exists()
    done = main_py("--resume", str(full["dir"]))
    assert done.returncode == 2 and "has completed" in one_line(done.stderr)


# ================================================================ which checkpoint

def test_a_newest_checkpoint_with_the_wrong_content_falls_back_to_the_previous_good_one(stopped, full, tmp_path):
    other = tmp_path / "other"
    runner.run(small("seed=7"), other, log=quiet)
    rd = RunDir(stopped)
    shutil.copy(CheckpointStore.of(other).list()[-1], CheckpointStore.of(rd.path).path(45))   # another config's state
    torch.save({"round": 50, "something": "else"}, CheckpointStore.of(rd.path).path(50))      # loads, holds no engine state
    logs = []
    s = runner.run(small(), stopped, resume=True, log=logs.append)
    assert any("round_00000050.pt cannot be used: it holds no engine state" in m for m in logs), logs
    assert any("round_00000045.pt cannot be used: it was written with a different config" in m for m in logs), logs
    assert any("resumed from round 40" in m for m in logs)
    assert s["status"] == "completed" and rows(stopped) == full["rows"]


def test_only_checkpoints_of_another_config_is_a_different_config(stopped, tmp_path):
    other = tmp_path / "other"
    runner.run(small("seed=7"), other, log=quiet)
    rd = RunDir(stopped)
    for p in CheckpointStore.of(rd.path).list():
        p.unlink()
    shutil.copy(CheckpointStore.of(other).list()[-1], CheckpointStore.of(rd.path).path(45))
    with pytest.raises(ConfigError, match="written with a different config"):
        runner.run(small(), stopped, resume=True, log=quiet)


# ================================================================ files: bad input is one line

@pytest.mark.parametrize("kind", ["latin-1", "binary", "yaml-syntax", "directory"])
def test_a_bad_config_file_is_one_line_and_nothing_written(tmp_path, kind):
    p = tmp_path / "c.yaml"
    if kind == "latin-1":
        p.write_bytes("name: caf\xe9\n".encode("latin-1"))
        expect = "not UTF-8 text (byte 0xe9 on line 1)"
    elif kind == "binary":
        p.write_bytes(Path(sys.executable).read_bytes()[:400])
        expect = "a binary file"
    elif kind == "yaml-syntax":
        p.write_text("name: x\ndata:\n  name: mnist1d\n   alpha: 1\n")
        expect = "line 4, column 9: mapping values are not allowed here"
    else:
        p = tmp_path / "adir"
        p.mkdir()
        expect = "is a directory, not a YAML file"
    out = main_py("--config", str(p), "--output-dir", str(tmp_path / "never"))
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert expect in line and str(p) in line, line
    assert not (tmp_path / "never").exists()


def test_config_from_dev_null_or_a_pipe_is_the_built_in_defaults():
    out = main_py("config", "--config", "/dev/null")
    assert out.returncode == 0, out.stderr
    assert out.stdout == main_py("config", "--config", str(ROOT / "tests" / "golden" / "empty.yaml")).stdout
    assert "seed: 7\n" in subprocess.run(
        ["bash", "-c", f"{sys.executable} {ROOT / 'main.py'} config --config <(echo 'seed: 7')"],
        capture_output=True, text=True, cwd=ROOT).stdout


def test_an_output_dir_under_a_file_is_one_line_before_anything_starts(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    out = main_py("--config", str(tiny_config(tmp_path)), "--output-dir", str(f / "run"))
    assert out.returncode == 2 and "is a file, not a directory" in one_line(out.stderr)
    assert f.read_text() == "x"


def test_resume_with_a_garbled_metrics_csv_or_a_checkpoint_that_is_a_directory(stopped):
    before_bytes = (stopped / "metrics.csv").read_bytes()
    (stopped / "metrics.csv").write_text("round,test_accuracy\n25,0.5\nnot a row at all\n")
    out = main_py("--resume", str(stopped))
    assert out.returncode == 2 and "metrics.csv, line 3: not a metrics row" in one_line(out.stderr)
    (stopped / "metrics.csv").write_bytes(b"\x00\x01binary")
    out = main_py("--resume", str(stopped))
    assert out.returncode == 2 and "metrics.csv" in one_line(out.stderr)
    (stopped / "metrics.csv").write_bytes(before_bytes)
    (CheckpointStore.of(stopped).path(99)).mkdir()
    out = main_py("--resume", str(stopped))
    assert out.returncode == 2 and "round_00000099.pt is not a checkpoint file" in one_line(out.stderr)
    (CheckpointStore.of(stopped).path(99)).rmdir()
    shutil.rmtree(stopped / "checkpoints")
    (stopped / "checkpoints").write_text("x")
    out = main_py("--resume", str(stopped))
    assert out.returncode == 2 and "checkpoints is not a directory" in one_line(out.stderr)


def test_a_row_torn_by_a_crash_and_stale_tmp_files_are_cleaned_on_resume(stopped, full):
    with open(stopped / "metrics.csv", "a") as f:
        f.write("50,2.0,0.05,0.28")                       # a crash in the middle of a row
    (stopped / "summary.json.tmp").write_text("{")        # a writer killed mid-rename
    (RunDir(stopped).checkpoints / "round_00000045.pt.tmp").write_bytes(b"half")
    logs = []
    assert runner.run(small(), stopped, resume=True, log=logs.append)["status"] == "completed"
    assert any("dropped its last line" in m for m in logs)
    assert rows(stopped) == full["rows"] and tmp_files(stopped) == []


@pytest.mark.parametrize("content,expect", [("", "is empty"), ("round,epoch\n", "has no lr"),
                                            ("\x00\x01\x02garbage,\n\"x", "not a CSV table")])
def test_report_on_an_empty_or_garbled_csv_is_one_line(tmp_path, content, expect):
    for name in ("metrics.csv", "results.csv"):
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        (d / name).write_text(content)
        with pytest.raises(ConfigError) as e:
            report.make_report(d)
        assert "\n" not in str(e.value)
        assert expect in str(e.value) or name == "results.csv" and ("has no" in str(e.value) or expect in str(e.value))
    out = main_py("report", str(tmp_path / "metrics"))
    assert out.returncode == 2 and "metrics.csv" in one_line(out.stderr)


# ================================================================ files: a real full or read-only disk

@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (mount needs root; skipped elsewhere, with the reason)."""
    mounted = []

    def make(size: str, read_only: bool = False) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs (a real full / read-only disk) needs root")
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d
    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_an_output_dir_on_a_read_only_filesystem_is_one_line(tmp_path, tmpfs):
    ro = tmpfs("64k", read_only=True)
    out = main_py("--config", str(tiny_config(tmp_path)), "--output-dir", str(ro / "run"))
    assert out.returncode == 2 and "read-only filesystem" in one_line(out.stderr)


def test_a_full_disk_at_the_first_checkpoint_is_one_line_and_leaves_no_run_dir(tmp_path, tmpfs):
    disk = tmpfs("16k")   # config.yaml and partition.csv fit, a first checkpoint (~20 kB) does not
    out = main_py("--config", str(tiny_config(tmp_path)), "--output-dir", str(disk / "runs" / "run"))
    assert out.returncode == 2, out.stderr[-2000:]
    line = one_line(out.stderr)
    assert line.startswith("error: ") and "No space left on device" in line and "round_00000000.pt" in line
    assert "nothing was kept" in line
    assert list(disk.iterdir()) == []   # neither the run directory nor the runs/ made for it


def test_a_full_disk_at_a_periodic_checkpoint_is_a_failed_summary_then_resumes(tmp_path, tmpfs):
    disk = tmpfs("96k")   # every checkpoint is kept (keep: 100): the disk fills up after a few
    cfg = tiny_config(tmp_path, epochs=12)
    out = main_py("--config", str(cfg), "--output-dir", str(disk / "run"))
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    d = disk / "run"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["message"]
    assert f"resume with python main.py --resume {d} once there is room" in summary["message"]
    assert 0 < summary["rounds"] < 300 and tmp_files(d) == []
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    res = main_py("--resume", str(d))
    assert res.returncode == 0, res.stderr[-2000:]
    ref = main_py("--config", str(cfg), "--output-dir", str(tmp_path / "ref"))
    assert ref.returncode == 0
    assert rows(d) == rows(tmp_path / "ref")
