"""SIGHUP (a closed terminal or SSH session), SIGQUIT (Ctrl-\\) and SIGUSR1 stop a run as SIGINT
and SIGTERM do: at the next round boundary, with a checkpoint, summary.json `stopped`, the resume
hint and 128 + the signal's number. A terminal's signal reaches its whole process group; Ray's
processes do not die of it, so the graceful stop on Ray still has its actors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qgm_ray import signals

ROOT = Path(__file__).resolve().parent.parent
TINY = ("name: tiny\nbackend: BACKEND\nprogress: false\n"
        "data: {name: synthetic, batch_size: 16, alpha: 1.0, root: DATA}\n"
        "model: {name: mlp, options: {hidden: [16]}}\ntopology: {name: ring, n_clients: 4}\n"
        "algorithm: {name: dsgd, lr: 0.05}\nschedule: {epochs: 40}\neval: {every_epochs: 1, local_models: false}\n")
NEW_SIGNALS = [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1]


def tiny_config(tmp_path, backend="local"):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("DATA", str(tmp_path / "data")).replace("BACKEND", backend))
    return p


def start_and_signal(cfg, out, sig, group=False):
    """Start `main.py` and send `sig` once its first evaluation is written; `group`: to its whole
    process group, as a terminal does."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--config", str(cfg), "--output-dir", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        t0 = time.time()
        while not (out / "metrics.csv").exists():
            assert proc.poll() is None and time.time() - t0 < 240, proc.communicate()
            time.sleep(0.02)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout, stderr


def assert_graceful_stop(rc, stdout, stderr, out, sig):
    name = signal.Signals(sig).name
    assert rc == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"{name}: stopping at the next round boundary" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and 0 < summary["rounds"]
    assert f"python main.py --resume {out}" in stdout
    assert (out / "checkpoints" / f"round_{summary['rounds']:08d}.pt").is_file()
    return summary


def test_every_stop_signal_is_handled_and_guarded():
    assert set(NEW_SIGNALS) | {signal.SIGINT, signal.SIGTERM} == set(signals.SIGNALS)
    assert set(signals.GROUP_SIGNALS) <= set(signals.SIGNALS)


def _blocked(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_processes_started_while_shielded_begin_with_the_terminal_signals_blocked():
    def start():
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    with signals.shielded_children():
        shielded = start()
    plain = start()
    try:
        time.sleep(0.5)
        for sig in signals.GROUP_SIGNALS:
            bit = 1 << (sig - 1)
            assert _blocked(shielded.pid) & bit and not _blocked(plain.pid) & bit
        assert not _blocked(os.getpid()) & (1 << (signal.SIGHUP - 1))   # this process: unblocked again
        os.kill(shielded.pid, signal.SIGHUP)
        time.sleep(0.3)
        assert shielded.poll() is None   # it survives what a closed terminal sends
    finally:
        for p in (shielded, plain):
            p.kill()
            p.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", NEW_SIGNALS, ids=[s.name for s in NEW_SIGNALS])
def test_a_new_stop_signal_stops_a_run_gracefully_and_it_resumes(tmp_path, sig):
    cfg = tiny_config(tmp_path)
    out = tmp_path / "run"
    rc, stdout, stderr = start_and_signal(cfg, out, sig)
    assert_graceful_stop(rc, stdout, stderr, out, sig)
    if sig == signal.SIGHUP:   # once is enough: the checkpoint it wrote resumes to the end
        res = subprocess.run([sys.executable, str(ROOT / "main.py"), "--resume", str(out)], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        assert json.loads((out / "summary.json").read_text())["status"] == "completed"


@pytest.mark.ray
@pytest.mark.slow
def test_a_closed_terminal_stops_a_ray_run_gracefully(tmp_path):
    """SIGHUP to the whole process group, Ray's processes included: the driver still takes its
    checkpoint from the actors."""
    cfg = tiny_config(tmp_path, backend="ray")
    out = tmp_path / "run"
    rc, stdout, stderr = start_and_signal(cfg, out, signal.SIGHUP, group=True)
    assert_graceful_stop(rc, stdout, stderr, out, signal.SIGHUP)


def test_a_sweep_hands_every_stop_signal_to_tunes_graceful_stop(tmp_path):
    """A sweep's driver: each stop signal but Ctrl-C goes through the SIGTERM path (Tune's graceful
    stop, 128 + its own number); restore() puts back what was there."""
    from qgm_ray import tune as qtune
    before = {s: signal.getsignal(s) for s in signals.SIGNALS}
    sweep = qtune._SweepSignals(tmp_path, new=True, log=lambda m: None)
    sweep.install()
    try:
        for s in signals.SIGNALS:
            assert signal.getsignal(s) == (sweep._abort if s == signal.SIGINT else sweep._term)
    finally:
        sweep.restore()
    assert {s: signal.getsignal(s) for s in signals.SIGNALS} == before
