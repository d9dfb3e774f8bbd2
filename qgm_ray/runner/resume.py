"""What a `--resume` needs before anything starts: a directory with a readable checkpoint
written with the same config (the keys that change the numbers, and how they are measured),
of a run that has not completed or diverged. Every refusal is one ConfigError line."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

from qgm_ray.config import Config
from qgm_ray.errors import ConfigError
from qgm_ray.outputs import RunDir
from qgm_ray.runner.checkpoints import (DIFFERENT_CONFIG, REPLAY_KEYS, REPLAY_KEYS_WHERE_USED, CheckpointStore,
                                       replay_fingerprint)
from qgm_ray.runner.metrics_file import MetricsFile
from qgm_ray.runner.plan import RunPlan, RunState

# Keys a --resume may not change: those that change the numbers, and how they are measured.
MEASURED_KEYS = REPLAY_KEYS + REPLAY_KEYS_WHERE_USED + ("eval", "clock")


def check_resumable(cfg: Config, run_dir: RunDir, log) -> None:
    """What a resume needs of the directory, before the data is made or Ray starts."""
    run_dir.check_layout()
    store = CheckpointStore.of(run_dir.path)
    store.check()
    if not store.list():
        raise ConfigError(f"--resume {run_dir.path}: no readable checkpoint in {run_dir.checkpoints}")
    if not (run_dir.path / "config.yaml").is_file():
        raise ConfigError(f"--resume {run_dir.path}: not a run directory (no config.yaml)")
    run_dir.remove_stale_tmp()   # of a writer killed mid-write; we are the one writer now
    check_resume_config(cfg, run_dir)
    MetricsFile.of(run_dir.path).read(log=log)  # a garbled metrics.csv is refused before Ray starts


def restore_points(run_dir: RunDir, cfg: Config, plan: RunPlan, log) -> tuple[dict, Iterator[tuple[Path, dict]]]:
    """The newest valid checkpoint and an iterator over the older ones; a ConfigError that
    says why when there is none."""
    problems: list = []
    older = CheckpointStore.of(run_dir.path).valid(replay_fingerprint(cfg), plan.total_rounds, log, problems)
    newest = next(older, None)
    if newest is not None:
        return newest[1], older
    if problems and all(p == DIFFERENT_CONFIG for p in problems):
        raise ConfigError(f"--resume {run_dir.path}: the checkpoint was written with a different "
                          f"config ({', '.join(REPLAY_KEYS)} must match config.yaml)")
    raise ConfigError(f"--resume {run_dir.path}: no readable checkpoint in {run_dir.checkpoints}")


def check_resume_config(cfg: Config, run_dir: RunDir) -> None:
    """A resumed run measures what it started measuring: refuse a change of any key that
    changes the numbers (REPLAY_KEYS) or how they are measured (eval.*), against the run's
    config.yaml. The rest (backend, compute.*, ray.*, fault_tolerance.*, progress) may change."""
    from qgm_ray.config import config_dict, from_dict
    try:
        written = from_dict(config_dict(run_dir.path / "config.yaml")).to_dict()
    except ConfigError as e:
        raise ConfigError(f"--resume {run_dir.path}: its config.yaml: {e}") from None
    now = cfg.to_dict()
    changed = [f"{k}: {a!r} -> {b!r}" for key in MEASURED_KEYS
               for k, a, b in _diff(key, written.get(key), now.get(key))]
    if changed:
        raise ConfigError(f"--resume {run_dir.path}: a resumed run must measure what it started measuring, but "
                          f"this changes {'; '.join(changed)} (different config); start a new run for that")


def _diff(key: str, a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            yield from _diff(f"{key}.{k}", a.get(k), b.get(k))
    elif a != b:
        yield key, a, b


def refuse_finished(run_dir: RunDir, checkpoint: Optional[dict], plan: RunPlan) -> None:
    """A completed (or diverged) run has nothing to resume: replaying it would rewrite its
    summary and final checkpoint with the same numbers."""
    summary = run_dir.read_summary() or {}
    state = RunState.from_checkpoint(checkpoint) if checkpoint is not None else None
    if summary.get("status") == "completed" or (state is not None and (state.status == "completed"
                                                                        or state.round >= plan.total_rounds)):
        raise ConfigError(f"--resume {run_dir.path}: the run has completed ({plan.total_rounds} of "
                          f"{plan.total_rounds} rounds); nothing to resume: start a new run in another directory")
    if summary.get("status") == "diverged":
        raise ConfigError(f"--resume {run_dir.path}: the run diverged ({summary.get('message', '')}); a resume "
                          f"would replay the same rounds: start a new run, e.g. with a smaller algorithm.lr")
