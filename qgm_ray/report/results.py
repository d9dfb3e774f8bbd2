"""What a sweep's trials did, read from their directories: a results.csv row per trial (from its
summary.json, or Tune's last report), the sweep's parameter keys, and every trial's metrics and
partition collected into one long table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pandas as pd

from qgm_ray import grid as tune_grid
from qgm_ray.runner.metrics_file import read_history

RESULT_COLUMNS = ["trial", "algorithm", "alpha", "topology", "n_clients", "seed", "lr",
                  "final_test_accuracy", "best_test_accuracy", "status", "rounds", "wall_seconds", "trial_dir"]
# Config keys that already have a column of their own in results.csv.
STANDARD_KEYS = {"algorithm.name": "algorithm", "data.alpha": "alpha", "topology.name": "topology",
                 "topology.n_clients": "n_clients", "seed": "seed", "algorithm.lr": "lr"}


def _column(key: str) -> str:
    return STANDARD_KEYS.get(key, key)


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trial_row(sweep_dir: Path, base: dict, trial_rel: Path, params: dict, metrics: dict,
              fallback_status: str) -> dict:
    """One results.csv row: the trial's config values and outcome. The run's summary.json is the
    source when the run finished; otherwise Tune's last report and `fallback_status`
    (stopped: by the scheduler; failed; interrupted: cut short by a stop signal)."""
    from qgm_ray.config import trial_dict

    d = trial_dict(base, params)
    summary = _read_json(Path(sweep_dir) / trial_rel / "summary.json")
    row = {"trial": Path(trial_rel).name, "algorithm": d["algorithm"]["name"], "alpha": d["data"]["alpha"],
           "topology": d["topology"]["name"], "n_clients": d["topology"]["n_clients"], "seed": d["seed"],
           "lr": d["algorithm"]["lr"], "trial_dir": str(trial_rel)}
    if summary is not None and summary.get("status") in ("completed", "diverged", "failed"):
        row.update({k: summary.get(k) for k in ("final_test_accuracy", "best_test_accuracy", "status",
                                                "rounds", "wall_seconds")})
        if row["status"] == "failed" and fallback_status == "interrupted":
            row["status"] = "interrupted"  # interrupted (KeyboardInterrupt) rather than crashed
    else:
        row.update({"final_test_accuracy": metrics.get("final_test_accuracy", metrics.get("test_accuracy")),
                    "best_test_accuracy": metrics.get("best_test_accuracy"), "status": fallback_status,
                    "rounds": metrics.get("round"), "wall_seconds": metrics.get("wall_seconds")})
    for key, value in params.items():
        if key not in STANDARD_KEYS:
            row[key] = value
    return row


def results_frame(rows: list[dict], param_keys: list[str] = ()) -> pd.DataFrame:
    extra = [k for k in param_keys if k not in STANDARD_KEYS]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS + extra)
    for col in ("final_test_accuracy", "best_test_accuracy", "alpha", "lr", "wall_seconds"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.sort_values(["algorithm", "alpha", "seed", "trial"], ascending=[True, False, True, True],
                          kind="stable").reset_index(drop=True)


def param_keys_of(base: dict) -> list[str]:
    """A sweep's parameter keys, dotted (a conditional grid's keys under its section included)."""
    tc = base.get("tune", {})
    grid, search = tc.get("grid", {}), tc.get("search", {})
    return tune_grid.keys(grid) + [k for k in search if k not in grid]


def rows_from_trial_dirs(sweep_dir: Path, base: dict) -> list[dict]:
    """results.csv rebuilt from the trial directories alone (no Tune): for `report` on a sweep
    whose driver died before writing it. A trial's parameters are the grid point its config
    took (a key its branch does not set stays out of its row, as in Tune's) and its samples."""
    from qgm_ray.config import config_dict, get_dotted

    keys = param_keys_of(base)
    grid = base["tune"]["grid"]
    rows = []
    for trial in sorted((Path(sweep_dir) / "trials").glob("*/config.yaml")):
        d = config_dict(trial)
        values = {}
        for k in keys:
            try:
                values[k] = get_dotted(d, k)
            except (KeyError, TypeError):   # an option of another branch's rule
                pass
        point = tune_grid.point_of(values, grid)
        params = {**(point if point is not None else {k: v for k, v in values.items() if k in grid}),
                  **{k: values[k] for k in base["tune"]["search"] if k in values}}
        rows.append(trial_row(sweep_dir, base, trial.parent.relative_to(sweep_dir), params, {}, "interrupted"))
    return rows


def collect_histories(sweep_dir: Path, df: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for _, r in df.iterrows():
        m = read_history(Path(sweep_dir) / str(r["trial_dir"]))
        if m is not None and len(m):
            m.insert(0, "trial", r["trial"])
            frames.append(m)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial"])


def collect_partitions(sweep_dir: Path, df: pd.DataFrame) -> pd.DataFrame:
    """One partition per alpha (the lowest seed that has one): enough for the heat-map."""
    frames = []
    for alpha, g in df.sort_values("seed").groupby("alpha", sort=False):
        for _, r in g.iterrows():
            p = Path(sweep_dir) / str(r["trial_dir"]) / "partition.csv"
            if p.is_file():
                part = pd.read_csv(p)
                part.insert(0, "seed", r["seed"])
                part.insert(0, "alpha", alpha)
                frames.append(part)
                break
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["alpha", "seed", "client"])

