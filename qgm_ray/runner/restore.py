"""A restore point taken: on `--resume` the engine loads the newest valid checkpoint whose
engine state it takes, and a run that goes on from a restored record (a resume, a replay after
a failure) redoes the evaluations after its round."""
from __future__ import annotations

from typing import Callable, Iterator

from qgm_ray.engine.base import Engine, EngineFailure
from qgm_ray.errors import ConfigError
from qgm_ray.outputs import RunDir
from qgm_ray.runner.metrics_file import MetricsFile
from qgm_ray.runner.plan import RunState


def load_fitting(engine: Engine, checkpoint: dict, older: Iterator, run_dir: RunDir,
                 log: Callable[[str], None]) -> dict:
    """The newest valid checkpoint whose engine state the engine takes, loaded into it; one it
    refuses (the wrong content) falls back to the one before (`older`: (path, checkpoint)s)."""
    while True:
        try:
            engine.load_state_dict(checkpoint["engine"])
            return checkpoint
        except EngineFailure:
            raise
        except Exception as e:  # noqa: BLE001 - the engine cannot take this state: try the previous
            log(f"checkpoint of round {RunState.from_checkpoint(checkpoint).round} does not fit this run's engine "
                f"({type(e).__name__}: {e}); falling back to the previous one")
        checkpoint = next((ckpt for _, ckpt in older), None)
        if checkpoint is None:
            raise ConfigError(f"--resume {run_dir.path}: no checkpoint in {run_dir.checkpoints} "
                              f"fits this run's engine")


def take_restored(metrics: MetricsFile, state: RunState) -> None:
    """Go on from a restored record: the evaluations after its round are redone. A record
    written before it kept the accuracies gets those of the rows before its round."""
    metrics.truncate_after(state.round)
    if state.final_test_accuracy is None:
        for acc in metrics.accuracies():
            state.record_accuracy(acc)
