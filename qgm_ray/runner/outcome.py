"""What a run's end says: summary.json's record of the outcome, and the messages of a stop, an
abort and a full disk, each with the command that resumes the run."""
from __future__ import annotations

import signal
import sys
from typing import Optional

from qgm_ray.config import Config
from qgm_ray.engine.base import Engine
from qgm_ray.outputs import RunDir, WriteError
from qgm_ray.runner.plan import RunState
from qgm_ray.runner.startup import Startup


def resume_hint(run_dir: RunDir) -> str:
    from qgm_ray.command import command
    return f"{command()} --resume {run_dir.path}"


def summary(cfg: Config, s: RunState, engine: Engine, run_dir: RunDir, startup: Startup,
            wall_seconds: float) -> dict:
    return {
        "status": s.status,
        "final_test_accuracy": s.final_test_accuracy,
        "best_test_accuracy": s.best_test_accuracy,
        "rounds": s.round,
        "wall_seconds": wall_seconds,
        "n_clients": engine.n_clients,
        "algorithm": cfg.algorithm.name,
        "alpha": cfg.data.alpha,
        "topology": cfg.topology.name,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "lr": cfg.algorithm.lr,
        "backend": cfg.backend,
        "time_lost_seconds": engine.time_lost_seconds,   # to failures and replays
        "message": s.message,
        "run_dir": str(run_dir.path),
        "startup": startup.seconds(),
    }


def write_summary(run_dir: RunDir, summary: dict) -> dict:
    try:
        run_dir.write_summary(summary)
    except WriteError as e:  # the disk is full: say so, the caller still gets the outcome
        print(f"{e}", file=sys.stderr, flush=True)
    return summary


def stopped_message(signum: Optional[int], at_round: int, run_dir: RunDir) -> str:
    name = signal.Signals(signum).name if signum else "stop"
    return f"{name}: stopped at round {at_round} (checkpointed); resume with: {resume_hint(run_dir)}"


def aborted_message(signum: int, at_round: int, run_dir: RunDir) -> str:
    return (f"{signal.Signals(signum).name} again: stopped at once at round {at_round}; resume from the "
            f"last checkpoint with: {resume_hint(run_dir)}")


def write_failed_message(e: WriteError, at_round: int, kept: Optional[int], run_dir: RunDir) -> str:
    where = (f"the checkpoint of round {kept} is kept: resume with {resume_hint(run_dir)} once there is room"
             if kept is not None else "no checkpoint is kept")
    return f"{e} at round {at_round}; {where}"
