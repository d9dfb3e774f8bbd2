"""A run follows no symbolic link out of its directory: a resume of a run whose checkpoints/,
metrics.csv or a checkpoint file is a link elsewhere is refused in one line, and the place the
link points to is left as it was."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qgm_ray.runner import run as runner
from qgm_ray.runner.checkpoints import CheckpointStore
from qgm_ray.runner.metrics_file import MetricsFile
from qgm_ray.config import load_config
from qgm_ray.outputs import OutputError, RunDir, check_no_links
from helpers import quiet

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}", "topology.n_clients=4",
         "data.batch_size=16", "schedule.epochs=2", "eval.every_epochs=1", "progress=false",
         "algorithm.lr=0.05", "backend=local", "fault_tolerance.checkpoint_every=5", "fault_tolerance.keep=100"]


def snapshot(path):
    return {p.relative_to(path): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(Path(path).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run as a driver killed after round 10 leaves it: resumable."""
    d = tmp_path_factory.mktemp("edges_rundir") / "run"
    runner.run(load_config(None, SMALL), d, log=quiet)
    for p in CheckpointStore.of(d).list():
        if int(p.stem.split("_")[1]) > 10:
            p.unlink()
    MetricsFile.of(d).truncate_after(10)
    (d / "summary.json").unlink()
    return d


@pytest.fixture
def two_runs(stopped_run, tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    shutil.copytree(stopped_run, mine)
    shutil.copytree(stopped_run, other)
    return mine, other


def _link_checkpoints(mine, other):
    shutil.rmtree(mine / "checkpoints")
    (mine / "checkpoints").symlink_to(other / "checkpoints")


def _link_metrics(mine, other):
    (mine / "metrics.csv").unlink()
    (mine / "metrics.csv").symlink_to(other / "metrics.csv")


def _link_one_checkpoint(mine, other):
    newest = CheckpointStore.of(mine).list()[-1]
    newest.unlink()
    newest.symlink_to(other / "checkpoints" / newest.name)


@pytest.mark.parametrize("link", [_link_checkpoints, _link_metrics, _link_one_checkpoint],
                         ids=["checkpoints-dir", "metrics-csv", "a-checkpoint"])
def test_resume_through_a_link_into_another_run_is_refused_and_the_other_run_is_untouched(two_runs, link):
    mine, other = two_runs
    link(mine, other)
    before = snapshot(other)
    with pytest.raises(OutputError, match="is a symbolic link .* a run writes only inside its own directory") as e:
        runner.run(load_config(None, SMALL), mine, resume=True, log=quiet)
    assert "\n" not in str(e.value)
    assert snapshot(other) == before
    assert not RunDir(mine).locked_by_another()   # the refusal released the directory


def test_a_run_directory_without_links_passes_and_a_resume_completes(two_runs):
    mine, other = two_runs
    check_no_links(mine)
    before = snapshot(other)
    assert runner.run(load_config(None, SMALL), mine, resume=True, log=quiet)["status"] == "completed"
    assert snapshot(other) == before


def test_the_link_check_is_not_mistaken_for_a_live_run(two_runs):
    mine, other = two_runs
    _link_checkpoints(mine, other)
    assert not RunDir(mine).locked_by_another()


@pytest.mark.slow
def test_main_resume_through_a_linked_checkpoints_dir_is_one_line_and_exit_2(two_runs):
    mine, other = two_runs
    _link_checkpoints(mine, other)
    before = snapshot(other)
    res = subprocess.run([sys.executable, str(ROOT / "main.py"), "--resume", str(mine)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "symbolic link" in lines[0]
    assert snapshot(other) == before
