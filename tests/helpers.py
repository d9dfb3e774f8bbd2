"""What many test files share: the small run they configure and how they run main.py."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A run that takes seconds: a 16-unit MLP on the synthetic dataset, quiet. Files add the
# client count, epochs, evaluation cadence and backend their tests need. On the session's Ray a
# run leaves its actors to the next one (engine/crew.py): their start would cost more than the
# run; tests/test_crew.py checks that the numbers are those of new actors.
SMALL_RUN = ("data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}", "data.batch_size=16",
             "progress=false", "algorithm.lr=0.05", "data.alpha=1.0", "ray.reuse_actors=true")


def small_run(*extra: str) -> list[str]:
    """SMALL_RUN's overrides and then these (a later override of the same key wins)."""
    return [*SMALL_RUN, *extra]


def main_py(*args, cwd=ROOT, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`python main.py ARGS` as a user runs it, its output captured as text (env: the whole
    environment, default this process's)."""
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def read_metrics(run_dir) -> list[dict]:
    """A run's metrics.csv, one dict of strings per row."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def replayable_metrics(run_dir) -> list[dict]:
    """read_metrics without wall_seconds: what two runs of one config must agree on exactly."""
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in read_metrics(run_dir)]


def stopped_copy(run_dir, into, after_round: int):
    """A copy of a finished run directory as a driver killed after `after_round` leaves it: no
    later checkpoints, no later metrics rows, no summary. Returns the copy's path."""
    import shutil

    from qgm_ray.runner.checkpoints import CheckpointStore
    from qgm_ray.runner.metrics_file import MetricsFile
    shutil.copytree(run_dir, into)
    for p in CheckpointStore.of(into).list():
        if int(p.stem.split("_")[1]) > after_round:
            p.unlink()
    MetricsFile.of(into).truncate_after(after_round)
    (Path(into) / "summary.json").unlink()
    return Path(into)


def quiet(msg: str) -> None:
    """A run's `log` that prints nothing."""


def local_engine(cfg):
    """The local engine of a config, its data prepared as a run prepares it."""
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.runner import run as runner
    ds, parts = runner.prepare(cfg, log=quiet)
    return LocalEngine(cfg, ds, parts)
