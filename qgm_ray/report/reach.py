"""Bytes to a target accuracy (pure pandas): the bytes (or simulated seconds) a run had sent at
its first evaluation that reaches the target, the target of each column of the table, and
those counts per cell, laid out as the accuracy table is."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from qgm_ray.report.cells import (
    _alpha_text,
    _ordered,
    _sections,
    best_trials,
    cell_stats,
    row_labels,
    split_keys,
    variant_keys,
)
from qgm_ray.report.results import _column

# Bytes to target: without a target given, this fraction of the best final accuracy of the
# table's column (a section at one alpha): reachable by every row that nearly matches the best.
TARGET_FRACTION = 0.9


def reach_bytes(history: pd.DataFrame, target: float, column: str = "bytes_sent") -> float:
    """`column` at a run's first evaluation whose test accuracy reaches `target` (bytes_sent:
    cumulative, every client's; sim_seconds: simulated time); NaN when none does or the run
    did not record the column."""
    h = history.sort_values("round")
    hit = h[h["test_accuracy"] >= target]
    return float(hit[column].iloc[0]) if len(hit) and column in hit else math.nan


def column_targets(df: pd.DataFrame, param_keys=(), target: Optional[float] = None) -> dict:
    """{(section..., alpha): target accuracy} for every column of the table: `target` where given,
    else TARGET_FRACTION of the best row's mean final accuracy in that column."""
    sections, hparams = split_keys(param_keys)
    stats = cell_stats(df, "final_test_accuracy", hparams, sections, variants=variant_keys(param_keys))
    if stats.empty:
        return {}
    sec_cols = [_column(k) for k in sections]
    out = {}
    for key, g in stats.groupby(sec_cols + ["alpha"], sort=False, dropna=False):
        best = g["mean"].max()
        out[key] = target if target is not None else (TARGET_FRACTION * best if np.isfinite(best) else math.nan)
    return out


def bytes_to_target(df: pd.DataFrame, histories: pd.DataFrame, param_keys=(),
                    target: Optional[float] = None, column: str = "bytes_sent") -> pd.DataFrame:
    """One row per cell (section..., algorithm, variant..., alpha) of the trials `best_trials`
    keeps that ran to their end (completed or diverged) with a history: its column's `target`
    (`column_targets`), `n` such trials, `n_reached` of them reaching it, and `bytes`: the mean
    of `reach_bytes` over those that did (NaN when none); `column`: sim_seconds gives the
    simulated time to the target in `bytes` instead. Pure pandas."""
    sections, _ = split_keys(param_keys)
    sec_cols = [_column(k) for k in sections]
    var_cols = [k for k in variant_keys(param_keys) if k in df.columns]
    cell = sec_cols + ["algorithm"] + var_cols + ["alpha"]
    columns = cell + ["target", "n", "n_reached", "bytes"]
    if histories.empty or column not in histories.columns or histories[column].isna().all():
        return pd.DataFrame(columns=columns)
    targets = column_targets(df, param_keys, target)
    sel = best_trials(df, param_keys)
    sel = sel[sel["status"].isin(["completed", "diverged"]) & sel["trial"].isin(set(histories["trial"]))]
    by_trial = dict(tuple(histories.groupby("trial", sort=False)))
    out = []
    for key, g in sel.groupby(cell, sort=False, dropna=False):
        rec = dict(zip(cell, key))
        t = targets.get(tuple(rec[c] for c in sec_cols + ["alpha"]), math.nan)
        reached = [b for b in (reach_bytes(by_trial[tr], t, column) for tr in g["trial"]) if not math.isnan(b)]
        out.append({**rec, "target": t, "n": len(g), "n_reached": len(reached),
                    "bytes": float(np.mean(reached)) if reached else math.nan})
    return pd.DataFrame(out, columns=columns)


def bytes_text(n: float) -> str:
    """A byte count, three significant digits, decimal units (1 kB = 1000 B): "1.23 GB"."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} B"


def seconds_text(s: float) -> str:
    """Simulated seconds, three significant digits: "12.3 s"."""
    return f"{s:.3g} s"


def _fmt_bytes(rec, text_of=bytes_text) -> str:
    if rec["n"] == 0:
        return "-"
    if rec["n_reached"] == 0:
        return "not reached"
    text = text_of(rec["bytes"])
    return text if rec["n_reached"] == rec["n"] else f"{text} [{rec['n_reached']}/{rec['n']} reached]"


def bytes_tables(df: pd.DataFrame, histories: pd.DataFrame, param_keys=(), target: Optional[float] = None,
                 algo_order=(), order=(), column: str = "bytes_sent") -> list[tuple[str, pd.DataFrame]]:
    """[(section title, table)] laid out as `accuracy_tables`, each cell the bytes its row sent to
    reach its column's target (`bytes_to_target`; `column` sim_seconds: the simulated time); the
    fewest in bold, the target in the header."""
    b = bytes_to_target(df, histories, param_keys, target, column)
    text_of = seconds_text if column == "sim_seconds" else bytes_text
    if b.empty:
        return []
    sections, _ = split_keys(param_keys)
    sec_cols = [_column(k) for k in sections]
    b["label"] = row_labels(b, param_keys)
    alphas = sorted(b["alpha"].dropna().unique(), reverse=True)
    tables = []
    for title, g in _sections(b, sec_cols):
        rows = _ordered(g["label"], g["algorithm"], algo_order, order)
        heads = {}
        for a in alphas:
            t = g.loc[g["alpha"] == a, "target"]
            t = t.iloc[0] if len(t) else math.nan
            heads[a] = f"α = {_alpha_text(a)} (target {100 * t:.2f}%)" if np.isfinite(t) else f"α = {_alpha_text(a)}"
        table = pd.DataFrame("", index=rows, columns=list(heads.values()))
        table.index.name = "algorithm"
        for a in alphas:
            col = g[g["alpha"] == a]
            fewest = col["bytes"].min()
            for _, rec in col.iterrows():
                text = _fmt_bytes(rec, text_of)
                if rec["n_reached"] and rec["bytes"] == fewest and col["bytes"].notna().sum() > 1:
                    value, unit, rest = (text.split(" ", 2) + [""])[:3]
                    text = f"**{value} {unit}**" + (f" {rest}" if rest else "")
                table.loc[rec["label"], heads[a]] = text
        tables.append((title, table))
    return tables

