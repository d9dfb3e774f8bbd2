"""A sweep's results: each trial's status from Tune's and from its run directory, results.csv,
table.md and the figures (qgm_ray.report), the closing lines."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from qgm_ray.command import command
from qgm_ray.tune.names import FINISHED, SCHEDULER_STOP, TRIALS
from qgm_ray.tune.space import grid_keys


def _write_results(sweep_dir, base, tc, total, results, statuses, t0, log) -> dict:
    from qgm_ray import report

    rows = []
    for params, name, metrics, error in results:
        trial_dir = Path(sweep_dir) / TRIALS / name
        tune_status = statuses.get(metrics.get("trial_id"))
        status = _trial_status(tune_status, error, (trial_dir / SCHEDULER_STOP).exists(), metrics.get("status"))
        if status in FINISHED and not trial_dir.is_dir():
            log(f"trial {name}: its run directory {trial_dir} is gone; its row comes from Tune's last report")
        rows.append(report.trial_row(sweep_dir, base, Path(TRIALS) / name, params, metrics, status))
    df = report.results_frame(rows, grid_keys(tc))
    files = report.write_sweep_report(sweep_dir, df)
    wall = time.time() - t0
    # Not done: trials cut short, and grid points Tune had not even created yet.
    unfinished = int((df["status"] == "interrupted").sum()) + max(0, total - len(df))
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    if total > len(df):
        counts["not started"] = total - len(df)
    log(f"sweep {'interrupted' if unfinished else 'finished'} after {wall / 60:.1f} min: "
        + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if unfinished:
        log(f"{unfinished} of {total} trials not done; continue with: {command()} tune --resume {sweep_dir}")
    log(f"table: {sweep_dir / 'table.md'}")
    return {"sweep_dir": sweep_dir, "results": df, "files": files, "wall_seconds": wall,
            "complete": unfinished == 0}


def _tune_statuses(grid) -> dict:
    """trial_id -> Tune status (TERMINATED, ERROR, PENDING, ...). ResultGrid keeps it private."""
    analysis = getattr(grid, "_experiment_analysis", None)
    return {t.trial_id: t.status for t in getattr(analysis, "trials", [])}


def _trial_status(tune_status: Optional[str], error, scheduler_stopped: bool = False,
                  reported: Optional[str] = None) -> str:
    """Status for a trial whose run directory holds no final summary.json. Tune marks TERMINATED
    a trial that ran to its end (its last report, `reported`, says how: completed or diverged;
    its directory may be gone since), one its scheduler stopped (ASHA: `stopped`) and one an
    interruption cut short; only the second has our marker (see _mark_scheduler_stop)."""
    if error is not None or tune_status == "ERROR":
        return "failed"
    if tune_status == "TERMINATED" and reported in FINISHED:
        return reported
    if tune_status == "TERMINATED" and scheduler_stopped:
        return "stopped"
    return "interrupted"
