"""The sweep's progress lines: one per finished trial (Tune's own reporter is off), a scheduler's
stop marked in the trial's directory, Tune's state resealed as it is saved."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from qgm_ray.tune.names import FINISHED, SCHEDULER_STOP, TRIALS
from qgm_ray.tune.sealing import SEAL_EVERY_S, seal_state
from qgm_ray.tune.space import _trial_name, describe_params, trial_params
from qgm_ray.tune.trainable import _finite


def _mark_scheduler_stop(sweep_dir: Path, trial) -> None:
    """A marker in the trial's run directory: stopped early by the scheduler (ASHA), on purpose.
    Without it a trial that did not finish was interrupted; the marker outlives a resume."""
    path = Path(sweep_dir) / TRIALS / _trial_name(trial)
    if path.is_dir():
        (path / SCHEDULER_STOP).write_text("stopped early by the scheduler\n")


def _progress_callback(total: int, log: Callable[[str], None], sweep_dir: Path):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished trial (Tune's own reporter is off: verbose=0). Tuner.restore
        brings back this same object (pickled with the run config): `setup` restarts the clock."""

        t0 = time.time()

        def setup(self, **info):
            self.t0 = time.time()

        def _line(self, trials, trial, outcome: str) -> None:
            # `trial` itself is not marked TERMINATED / ERROR yet when the callback runs.
            done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
            elapsed = time.time() - self.t0
            log(f"[{done:>{len(str(total))}}/{total}] {describe_params(trial_params(trial.config))}: {outcome}"
                f"  ({elapsed / 60:.1f} min elapsed)")

        def on_trial_complete(self, iteration, trials, trial, **info):
            # Tune calls this for a trial that ended (its last report) or that the scheduler
            # stopped, never for one cut short by an interruption (Tune just ends those).
            r = trial.last_result or {}
            status = r.get("status")
            if status not in FINISHED:
                _mark_scheduler_stop(sweep_dir, trial)
            if status == "completed":
                outcome = (f"completed, final {_pct(r.get('final_test_accuracy'))} best "
                           f"{_pct(r.get('best_test_accuracy'))}, {r.get('wall_seconds', float('nan')):.0f} s")
            elif status == "diverged":
                outcome = (f"DIVERGED at round {r.get('round')} (last evaluation before: "
                           f"{_pct(r.get('final_test_accuracy'))})")
            else:
                outcome = (f"stopped early by the scheduler at epoch {r.get('epoch', float('nan')):g}, "
                           f"test accuracy {_pct(r.get('test_accuracy'))}")
            self._line(trials, trial, outcome)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trials, trial, f"FAILED (see {trial.path}/error.txt)")

        def on_step_end(self, iteration, trials, **info):
            # Tune has just saved its state (it does so at the end of a step).
            now = time.monotonic()
            if now - getattr(self, "sealed_at", 0.0) >= SEAL_EVERY_S:
                self.sealed_at = now
                seal_state(sweep_dir)

    return Progress()


def _pct(x) -> str:
    return f"{100 * float(x):.2f}%" if _finite(x) else "n/a"
