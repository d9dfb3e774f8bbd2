"""A sweep's trials grouped as the table shows them (pure pandas): which grid keys are sections,
hyper-parameters or row variants, each row's label and order, and per cell (section,
algorithm, variant, alpha) the mean and spread over seeds with the best hyper-parameter
setting and whether it sits at an edge of its grid."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from qgm_ray import grid as tune_grid
from qgm_ray.report.results import _column

# A rule's or a compressor's own option (and which compressor): each value is a row of its own,
# named after the algorithm, since what a sweep over it asks is how every value does.
VARIANT_PREFIXES = ("algorithm.options.", "compression.")
# ... but for CHOCO's step size and warm-up, tuned per compressor as an lr is per rule.
TUNED_VARIANTS = ("compression.consensus_lr", "compression.warmup_")
# A variant whose value is a name: shown alone in the row's label ("top_k", not "op=top_k").
NAME_VARIANTS = ("compression.op",)
# Grid keys with these prefixes are hyper-parameters: the table shows the best value per cell.
# Any other grid key (topology, model, data options) splits the table in sections.
HPARAM_PREFIXES = ("algorithm.", "schedule.", "data.batch_size") + TUNED_VARIANTS
CELL_KEYS = ("algorithm.name", "data.alpha", "seed")


def is_variant(key: str) -> bool:
    return key.startswith(VARIANT_PREFIXES) and not key.startswith(TUNED_VARIANTS)


def variant_keys(param_keys) -> list[str]:
    """The keys among a sweep's grid/search keys whose every value is a row of the table."""
    return [k for k in param_keys if is_variant(k)]


def split_keys(param_keys) -> tuple[list[str], list[str]]:
    """(section keys, hyper-parameter keys) among a sweep's grid/search keys; the cell keys and
    the variants (`variant_keys`) are neither."""
    sections, hparams = [], []
    for k in param_keys:
        if k in CELL_KEYS or is_variant(k):
            continue
        (hparams if k.startswith(HPARAM_PREFIXES) else sections).append(k)
    return sections, hparams


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def row_label(rec, var_cols=()) -> str:
    """A table row's name: the algorithm, then each variant's value a trial has ("qg_dsgdm_n
    top_k keep=0.1"); a key its branch does not set is left out."""
    parts = [str(rec["algorithm"])]
    for c in var_cols:
        v = rec.get(c) if hasattr(rec, "get") else rec[c]
        if _missing(v):
            continue
        text = f"{v:g}" if isinstance(v, float) else str(v)
        parts.append(text if c in NAME_VARIANTS else f"{c.rsplit('.', 1)[-1]}={text}")
    return " ".join(parts)


def row_labels(df: pd.DataFrame, param_keys=()) -> pd.Series:
    """Every trial's row label (`row_label`), by the sweep's variant keys."""
    var_cols = [c for c in variant_keys(param_keys) if c in df.columns]
    return pd.Series([row_label(r, var_cols) for _, r in df.iterrows()], index=df.index, dtype=object)


def label_order(base: dict, param_keys=()) -> list[str]:
    """The rows in the order the sweep's grid lists them (its rules, each rule's branches)."""
    if not base:
        return []
    var_cols = variant_keys(param_keys)
    out = []
    for point in tune_grid.points(base.get("tune", {}).get("grid", {})):
        rec = {"algorithm": point.get("algorithm.name", base["algorithm"]["name"]),
               **{c: point.get(c) for c in var_cols}}
        out.append(row_label(rec, var_cols))
    return list(dict.fromkeys(out))



def _sections(frame: pd.DataFrame, sec_cols: list):
    """(title, rows) per value of the section columns (one table each): "topology = ring, ..."."""
    groups = frame.groupby(sec_cols, sort=False, dropna=False) if sec_cols else [((), frame)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        yield ", ".join(f"{c} = {v}" for c, v in zip(sec_cols, key)), g


def _ordered(labels, algorithms, algo_order=(), order=()) -> list[str]:
    """Distinct row labels (`algorithms`: each one's algorithm) grouped by algorithm, in
    `algo_order` then order of appearance; within an algorithm in `order` where listed, then
    in order of appearance."""
    labels, algorithms = list(labels), list(algorithms)
    algos = list(dict.fromkeys(list(algo_order) + algorithms))
    first = list(dict.fromkeys(labels))
    algo_of = dict(zip(labels, algorithms))
    pos = {lab: i for i, lab in enumerate(order)}
    return sorted(first, key=lambda lab: (algos.index(algo_of[lab]), pos.get(lab, len(pos)), first.index(lab)))


def grid_edges(best: dict, tried: dict) -> str:
    """Which winning values sit at an end of the values tried, e.g. "lr = grid max": the optimum
    may lie beyond, so that grid should be widened. `best` {column: value}, `tried` {column:
    values}; a column with fewer than 2 numeric values tried has no edge."""
    notes = []
    for col, values in tried.items():
        values = sorted(pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna().unique())
        v = pd.to_numeric(pd.Series([best.get(col)]), errors="coerce").iloc[0]
        if len(values) < 2 or pd.isna(v):
            continue
        name = col.rsplit(".", 1)[-1]
        if np.isclose(v, values[-1]):
            notes.append(f"{name} = grid max")
        elif np.isclose(v, values[0]):
            notes.append(f"{name} = grid min")
    return ", ".join(notes)


def cell_stats(df: pd.DataFrame, value: str = "final_test_accuracy", hparams=(), sections=(),
               mode: str = "max", grid: Optional[dict] = None, variants=()) -> pd.DataFrame:
    """One row per (section..., algorithm, variant..., alpha): mean / std over the seeds of
    completed trials, counts by status and, when `hparams` were tuned, the best setting (by
    mean) and its stats. A variant a trial's branch does not set is NaN in its cell's key.

    `edge` names the winning hyper-parameter values that sit at an end of their grid
    (`grid_edges`). `grid` is the sweep's tune.grid: its plain keys are judged against every
    value of the grid (a partial sweep may not have tried them all yet), a key of a conditional
    branch against the values its cell tried, a sampled key not at all; without `grid`, every
    hyper-parameter is judged against the values the cell tried."""
    hp_cols = [_column(k) for k in hparams]
    sec_cols = [_column(k) for k in sections]
    var_cols = [k for k in variants if k in df.columns]
    cell = sec_cols + ["algorithm"] + var_cols + ["alpha"]
    branch_keys = set(tune_grid.keys(grid)) - set(grid) if grid is not None else set()
    out = []
    for key, g in df.groupby(cell, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(cell, key))
        rec["n_trials"] = len(g)
        for s in ("completed", "diverged", "failed", "stopped", "interrupted"):
            rec[f"n_{s}"] = int((g["status"] == s).sum())
        ok = g[g["status"] == "completed"]
        best = None
        if hp_cols and len(ok):
            per = ok.groupby(hp_cols, dropna=False)[value].agg(["mean", "std", "count"]).reset_index()
            # A setting that diverged (or crashed) on some seed is not a usable setting: it ranks
            # after every setting that completed on all its seeds, whatever its mean.
            bad = g[g["status"].isin(["diverged", "failed"])].groupby(hp_cols, dropna=False).size()
            per["n_bad"] = [int(bad.get(k if len(hp_cols) > 1 else k[0], 0))
                            for k in per[hp_cols].itertuples(index=False, name=None)]
            per = per.sort_values(["n_bad", "mean"], ascending=[True, mode != "max"], kind="stable")
            best = per.iloc[0]
            rec.update({c: best[c] for c in hp_cols})
            rec.update({"mean": best["mean"], "std": best["std"], "n": int(best["count"]),
                        "n_bad_at_best": int(best["n_bad"])})
            tried = ({_column(k): grid[k] if k in grid else g[_column(k)] for k in hparams
                      if k in grid or k in branch_keys} if grid is not None
                     else {c: g[c] for c in hp_cols})
            rec["edge"] = grid_edges({c: best[c] for c in hp_cols}, tried)
        else:
            rec.update({"mean": ok[value].mean() if len(ok) else np.nan,
                        "std": ok[value].std() if len(ok) > 1 else np.nan, "n": len(ok)})
        out.append(rec)
    return pd.DataFrame(out)


def _alpha_text(a) -> str:
    return f"{a:g}"


def best_trials(df: pd.DataFrame, param_keys=()) -> pd.DataFrame:
    """For a hyper-parameter sweep, only the trials of each cell's best setting; every variant
    (`variant_keys`) is a cell of its own, so all of them stay."""
    sections, hparams = split_keys(param_keys)
    if not hparams:
        return df
    variants = [k for k in variant_keys(param_keys) if k in df.columns]
    stats = cell_stats(df, "final_test_accuracy", hparams, sections, variants=variants)
    keys = [_column(k) for k in sections] + ["algorithm"] + variants + ["alpha"] + [_column(k) for k in hparams]
    keep = stats[stats["n"] > 0][keys]
    return df.merge(keep, on=keys, how="inner")   # pandas matches a NaN key (an unset variant) to NaN

