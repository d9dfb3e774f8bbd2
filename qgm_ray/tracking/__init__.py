"""Experiment trackers: a run's metrics rows and its resolved config, as the run goes, to
TensorBoard event files, MLflow and Weights & Biases (the config's `tracking:` section).

The runner hands each metrics.csv row to `Trackers.log` right after the file took it (the one
place rows are written), so every tracker holds what metrics.csv holds: a scalar per column, by
round. A tracker is on when its section says where its runs go; its package is checked with the
config (`check_installed`), before anything starts. A tracker that fails (a full disk, a server
gone) is dropped with one warning line: training never stops or waits for a tracker.

What is written: TensorBoard's event files in <run dir>/tensorboard/, W&B's files in
<run dir>/wandb/ (and whatever W&B online sends to its server), MLflow's runs where its
tracking_uri points; tracking.json in the run directory keeps the MLflow and W&B run ids, so a
--resume goes on in the same tracker runs. A replay after a failure (or a resume) redoes the
rows after its round: TensorBoard drops the old ones (a session restart purges them); MLflow and
W&B keep every value they were sent, so such rows appear twice there (the same numbers again).

This package holds `Trackers`, what the runner holds. section.py reads the `tracking:` section
(which trackers are on, their packages), values.py turns a run's config, rows and end into what
trackers take, ids.py keeps the tracker runs' ids (tracking.json); tensorboard_tracker.py,
mlflow_tracker.py and wandb_tracker.py are the trackers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from qgm_ray.outputs import WriteError
from qgm_ray.tracking.ids import IDS_FILE, _read_ids, _write_ids
from qgm_ray.tracking.mlflow_tracker import _MLflow, absolute_uri
from qgm_ray.tracking.section import PACKAGES, WANDB_MODES, check_installed, enabled
from qgm_ray.tracking.tensorboard_tracker import TENSORBOARD_DIR, _TensorBoard
from qgm_ray.tracking.values import ENDS, flat_params, row_values
from qgm_ray.tracking.wandb_tracker import _WandB

__all__ = ["ENDS", "IDS_FILE", "PACKAGES", "TENSORBOARD_DIR", "Trackers", "WANDB_MODES", "absolute_uri",
           "check_installed", "enabled", "flat_params", "row_values"]


WARNING_CHARS = 400                 # of a tracker's error, in its one warning line


class Trackers:
    """The trackers a run's config turns on. `log(row)` after each metrics row, `rewind(round)`
    when the rows after `round` are redone, `close(status)` at the end. Each call goes to every
    live tracker; one that raises is dropped after one warning line."""

    def __init__(self, trackers: list, log: Callable[[str], None]):
        self._trackers, self._log = trackers, log

    @classmethod
    def open(cls, cfg, run_dir: Path, columns, *, resume_round: Optional[int] = None,
             log: Callable[[str], None] = print) -> "Trackers":
        """Start the enabled trackers of `cfg` for the run in `run_dir`; `resume_round`: the
        round a --resume goes on from (None: a new run)."""
        run_dir = Path(run_dir)
        names = enabled(cfg.tracking)
        if not names:
            return cls([], log)
        ids = _read_ids(run_dir)
        made = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}
        trackers = cls([], log)
        for name in names:
            try:
                trackers._trackers.append(made[name](cfg, run_dir, list(columns), resume_round, ids))
            except Exception as e:  # noqa: BLE001 - a tracker that cannot start is not the run's failure
                trackers._warn(name, e, "could not start")
        try:
            if any(t.ids() for t in trackers._trackers):
                _write_ids(run_dir, {**ids, **{t.name: t.ids() for t in trackers._trackers if t.ids()}})
        except WriteError as e:
            log(f"warning: {e}; a --resume starts new tracker runs")
        return trackers

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._trackers]

    def log(self, row: dict) -> None:
        self._each("log", row)

    def rewind(self, round_: int) -> None:
        self._each("rewind", round_)

    def close(self, status: str) -> None:
        self._each("close", status)
        self._trackers = []

    def _each(self, method: str, *args) -> None:
        for t in list(self._trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:  # noqa: BLE001 - training goes on without a failed tracker
                self._trackers.remove(t)
                self._warn(t.name, e, "failed")
                try:
                    t.abandon()
                except Exception:  # noqa: BLE001 - it has failed already; its end is best effort
                    pass

    def _warn(self, name: str, e: BaseException, what: str) -> None:
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        if len(reason) > WARNING_CHARS:   # one line; what to do about it often closes the message
            reason = f"{reason[:WARNING_CHARS // 2]} ... {reason[-WARNING_CHARS // 2:]}"
        self._log(f"warning: tracking.{name} {what} ({reason}); training goes on without it")
