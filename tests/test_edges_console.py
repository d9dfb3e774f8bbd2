"""A closed or full stdout never stops a run (its product is its directory); for `config` and
`report`, whose product is what they print, a full stdout is one line and exit 2, and a reader
that closed the pipe (`| head`) is not an error."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qgm_ray import console

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}", "topology.n_clients=4",
         "data.batch_size=16", "schedule.epochs=2", "eval.every_epochs=1", "backend=local"]
FULL = "/dev/full"


def main_cmd(*args):
    return [sys.executable, str(ROOT / "main.py"), *args]


def small_args(out):
    return [a for kv in SMALL for a in ("--set", kv)] + ["--output-dir", str(out)]


def stderr_lines(text):
    return [line for line in text.splitlines() if line.strip() and "round/s" not in line]


def finished(out):
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return summary, rows


needs_dev_full = pytest.mark.skipif(not os.path.exists(FULL), reason="no /dev/full here")


# ---------------------------------------------------------------- the guard itself

def test_a_stream_whose_reader_left_absorbs_every_write():
    r, w = os.pipe()
    os.close(r)   # the reader is gone: every write is EPIPE
    raw = os.fdopen(w, "w", buffering=1)
    seen = []
    g = console.GuardedStream(raw, "stdout", on_lost=lambda name, e: seen.append((name, e.errno)))
    try:
        for _ in range(3):
            assert g.write("a line\n") == len("a line\n")
        g.flush()
        assert console.reader_left(g.error) and len(seen) == 1 and seen[0][0] == "stdout"
        assert os.path.samefile(f"/proc/self/fd/{w}", os.devnull)   # the rest goes nowhere
    finally:
        raw.close()


@needs_dev_full
def test_a_full_device_is_kept_as_the_first_error_and_is_not_a_closed_pipe():
    raw = open(FULL, "w")
    g = console.GuardedStream(raw, "stdout")
    try:
        g.write("x" * 100000)
        g.flush()
        assert g.error is not None and not console.reader_left(g.error)
    finally:
        raw.close()


# ---------------------------------------------------------------- a run

@pytest.mark.slow
@pytest.mark.parametrize("with_stderr", [False, True], ids=["stdout", "stdout-and-stderr-with-progress-bar"])
def test_a_run_with_its_stdout_closed_after_20_bytes_completes_and_writes_its_files(tmp_path, with_stderr):
    """`python main.py ... | head -c 20` (and `2>&1 | head -c 20`, tqdm's bar going to the same
    pipe): the reader leaves after the first line."""
    out = tmp_path / "run"
    args = small_args(out) + (["--set", "progress=true"] if with_stderr else [])
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(main_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT if with_stderr else err)
        assert len(proc.stdout.read(20)) == 20
        proc.stdout.close()
        rc = proc.wait(timeout=300)
    assert rc == 0, (tmp_path / "stderr").read_text()[-3000:]
    summary, rows = finished(out)
    assert summary["status"] == "completed" and len(rows) == 2 and int(rows[-1]["round"]) == summary["rounds"]
    assert "Traceback" not in (tmp_path / "stderr").read_text()


@pytest.mark.slow
@needs_dev_full
def test_a_run_with_stdout_on_a_full_device_completes_with_one_line(tmp_path):
    out = tmp_path / "run"
    with open(FULL, "w") as full:
        res = subprocess.run(main_cmd(*small_args(out), "--quiet"), cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                             text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert stderr_lines(res.stderr) == ["stdout: cannot write (No space left on device); going on without it"]
    summary, rows = finished(out)
    assert summary["status"] == "completed" and len(rows) == 2


# ---------------------------------------------------------------- commands that print their product

@needs_dev_full
@pytest.mark.parametrize("args", [["config", "--keys"], ["config"], ["--help"]], ids=["keys", "config", "help"])
def test_config_on_a_full_device_is_one_line_and_exit_2(args):
    with open(FULL, "w") as full:
        res = subprocess.run(main_cmd(*args), cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    if args == ["--help"]:   # argparse exits 0 after printing: it stays quiet, without a traceback
        assert "Traceback" not in res.stderr
        return
    assert res.returncode == 2 and stderr_lines(res.stderr) == ["error: cannot write to stdout: No space left on device"]


def test_config_keys_into_a_pipe_closed_early_is_quiet_and_exit_0():
    proc = subprocess.Popen(main_cmd("config", "--keys"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


@pytest.mark.slow
@needs_dev_full
def test_report_on_a_full_device_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "run"
    assert subprocess.run(main_cmd(*small_args(out), "--quiet"), cwd=ROOT, capture_output=True,
                          timeout=300).returncode == 0
    with open(FULL, "w") as full:
        res = subprocess.run(main_cmd("report", str(out)), cwd=ROOT, stdout=full, stderr=subprocess.PIPE, text=True,
                             timeout=300)
    assert res.returncode == 2 and stderr_lines(res.stderr) == ["error: cannot write to stdout: No space left on device"]
