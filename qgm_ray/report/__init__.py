"""Tables and figures from a run directory or a sweep directory.

    python main.py report runs/tune_heterogeneity-20261125-101500   # a sweep
    python main.py report runs/default-20261125-101500              # one run

A sweep gets `results.csv` (a row per trial), `histories.csv` (every trial's metrics.csv, long
format), `partitions.csv` (one partition per alpha), `table.md` (algorithms x alpha, mean ± std
over seeds, like Table 1 of the QGM paper; for a hyper-parameter search, the best value per cell;
a rule's or compressor's own option gives every value a row of its own; then the bytes each row
sent to reach a target accuracy) and PNG figures (for an lr grid also lr_sensitivity.png:
accuracy against lr per alpha; accuracy_vs_bytes.png, its data in accuracy_vs_bytes.csv). A run
gets its curves, its accuracy against bytes sent and its partition heat-map.

The table functions are pure pandas (testable without Tune); the figures are matplotlib Figure
objects written straight to PNG. This package holds the entry points (make_report,
write_sweep_report); results.py reads the trials, cells.py groups them into the table's cells,
reach.py counts the bytes to a target accuracy, tables.py writes table.md, figures.py draws
the PNGs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from qgm_ray.errors import ConfigError
from qgm_ray.report.cells import (
    best_trials,
    cell_stats,
    grid_edges,
    is_variant,
    label_order,
    row_label,
    row_labels,
    split_keys,
    variant_keys,
)
from qgm_ray.report.figures import (
    PLOTTED,
    lr_curves,
    plot_accuracy_vs_alpha,
    plot_accuracy_vs_bytes,
    plot_accuracy_vs_time,
    plot_curves,
    plot_lr_sensitivity,
    plot_partitions,
    plot_run_bytes,
    plot_run_curves,
)
from qgm_ray.report.reach import (
    TARGET_FRACTION,
    bytes_tables,
    bytes_text,
    bytes_to_target,
    column_targets,
    reach_bytes,
    seconds_text,
)
from qgm_ray.report.results import (
    RESULT_COLUMNS,
    _read_json,
    collect_histories,
    collect_partitions,
    param_keys_of,
    results_frame,
    rows_from_trial_dirs,
    trial_row,
)
from qgm_ray.report.tables import accuracy_tables, table_markdown, to_markdown
from qgm_ray.runner.metrics_file import MetricsFile

__all__ = [
    "RESULT_COLUMNS", "TARGET_FRACTION", "accuracy_tables", "best_trials", "bytes_tables", "bytes_text",
    "bytes_to_target", "cell_stats", "check_target", "collect_histories", "collect_partitions",
    "column_targets", "grid_edges", "is_variant", "label_order", "lr_curves", "make_report", "param_keys_of",
    "plot_accuracy_vs_alpha", "plot_accuracy_vs_bytes", "plot_accuracy_vs_time", "plot_curves",
    "plot_lr_sensitivity", "plot_partitions", "plot_run_bytes", "plot_run_curves", "reach_bytes",
    "results_frame", "row_label", "row_labels", "rows_from_trial_dirs", "seconds_text", "split_keys",
    "table_markdown", "to_markdown", "trial_row", "variant_keys", "write_sweep_report",
]


def _read_csv(path: Path, numeric: tuple = (), text: tuple = ()) -> pd.DataFrame:
    """A CSV this program wrote, or one ConfigError line saying what is wrong with it (empty,
    not CSV, a column missing or not numbers), instead of pandas' traceback."""
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"report: {path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"report: {path} is not a CSV table written by qgm-ray ({type(e).__name__}: {first})") from None
    missing = [c for c in numeric + text if c not in df.columns]
    if missing:
        raise ConfigError(f"report: {path} has no {', '.join(missing)} column: not a file written by qgm-ray")
    for c in numeric:
        bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()]
        if len(bad):
            raise ConfigError(f"report: {path}: column {c} holds {str(bad.iloc[0])[:40]!r}, not a number")
        df[c] = pd.to_numeric(df[c])
    return df


def _sweep_base(sweep_dir: Path) -> dict:
    from qgm_ray.config import config_dict
    p = Path(sweep_dir) / "config.yaml"
    return config_dict(p) if p.is_file() else {}


def write_sweep_report(sweep_dir: Path, df: pd.DataFrame, target: Optional[float] = None) -> list[Path]:
    """results.csv, histories.csv, partitions.csv, table.md and the figures of a sweep; `target`:
    the test accuracy the bytes table counts to (None: TARGET_FRACTION of each column's best)."""
    sweep_dir = Path(sweep_dir)
    base = _sweep_base(sweep_dir)
    param_keys = param_keys_of(base)
    written = []

    df.to_csv(sweep_dir / "results.csv", index=False)
    written.append(sweep_dir / "results.csv")

    histories = collect_histories(sweep_dir, df)
    if histories.empty and (sweep_dir / "histories.csv").is_file():
        histories = pd.read_csv(sweep_dir / "histories.csv")  # a copy without the trial directories
    elif not histories.empty:
        histories.to_csv(sweep_dir / "histories.csv", index=False)
        written.append(sweep_dir / "histories.csv")

    parts = collect_partitions(sweep_dir, df)
    if parts.empty and (sweep_dir / "partitions.csv").is_file():
        parts = pd.read_csv(sweep_dir / "partitions.csv")
    elif not parts.empty:
        parts.to_csv(sweep_dir / "partitions.csv", index=False)
        written.append(sweep_dir / "partitions.csv")

    (sweep_dir / "table.md").write_text(table_markdown(df, base, param_keys, histories, target))
    written.append(sweep_dir / "table.md")

    written.append(plot_accuracy_vs_alpha(df, sweep_dir / "accuracy_vs_alpha.png", param_keys))
    written.append(plot_lr_sensitivity(df, sweep_dir / "lr_sensitivity.png", param_keys))
    if len(df) and df["alpha"].notna().any():
        a = float(df["alpha"].min())
        written.append(plot_curves(df, histories, a, sweep_dir / f"curves_alpha{a:g}.png", param_keys))
        bytes_png = plot_accuracy_vs_bytes(df, histories, sweep_dir / "accuracy_vs_bytes.png", param_keys,
                                           column_targets(df, param_keys, target), label_order(base, param_keys))
        written += [bytes_png, bytes_png.with_suffix(".csv")] if bytes_png else []
    if not parts.empty:
        panels = [(f"alpha = {a:g} (seed {int(g['seed'].iloc[0])})", g.drop(columns=["alpha", "seed"]))
                  for a, g in sorted(parts.groupby("alpha"), key=lambda item: -item[0])]
        written.append(plot_partitions(panels, sweep_dir / "partitions.png"))
    return [p for p in written if p is not None]


def check_target(target: Optional[float]) -> None:
    if target is not None and not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ConfigError(f"report --target must be a test accuracy in (0, 1] (0.6 for 60%), got {target!r}")


def make_report(path: str | Path, target: Optional[float] = None) -> list[Path]:
    """Tables and figures for a sweep directory (results.csv / tune/) or a run directory
    (metrics.csv). `target`: the test accuracy a sweep's bytes table counts to (None:
    TARGET_FRACTION of each column's best). Returns the files written."""
    check_target(target)
    path = Path(path)
    if (path / "results.csv").is_file() or (path / "tune").is_dir() or (path / "trials").is_dir():
        base = _sweep_base(path)
        if (path / "results.csv").is_file():
            # The sweep's own record: it also holds what only Tune knew (stopped by ASHA, failed).
            df = _read_csv(path / "results.csv", numeric=("alpha", "final_test_accuracy"),
                           text=("algorithm", "status"))
            if df.empty:
                raise ConfigError(f"report {path}: {path / 'results.csv'} lists no trial (only its header): "
                                  f"no trial of the sweep had started; nothing to report")
        elif (path / "trials").is_dir() and base:
            # The driver died before writing it: rebuild from the trial directories.
            df = results_frame(rows_from_trial_dirs(path, base), param_keys_of(base))
        else:
            raise ConfigError(f"report {path}: a sweep directory without results.csv or trials/")
        return write_sweep_report(path, df, target)
    if MetricsFile.of(path).path.is_file():
        metrics = MetricsFile.of(path).frame(required=PLOTTED)
        if metrics.empty:
            raise ConfigError(f"report {path}: metrics.csv is empty: no evaluation yet")
        summary = _read_json(path / "summary.json") or {}
        title = " ".join(str(summary[k]) for k in ("algorithm", "dataset", "topology") if k in summary)
        if "alpha" in summary:
            title += f" alpha={summary['alpha']:g}"
        if "status" in summary:
            title += f" ({summary['status']})"
        written = [plot_run_curves(metrics, path / "curves.png", title),
                   plot_accuracy_vs_time(metrics, path / "accuracy_vs_time.png", title)]
        bytes_png = plot_run_bytes(metrics, path / "accuracy_vs_bytes.png", title)
        written += [bytes_png, bytes_png.with_suffix(".csv")] if bytes_png else []
        if (path / "partition.csv").is_file():
            written.append(plot_partitions([(f"partition {title}", _read_csv(path / "partition.csv", ("client",)))],
                                           path / "partition.png"))
        return [p for p in written if p is not None]
    raise ConfigError(f"report {path}: neither a run directory (metrics.csv) nor a sweep directory (results.csv)")
