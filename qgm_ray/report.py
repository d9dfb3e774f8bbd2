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
objects written straight to PNG, so no display and no pyplot state are involved.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from qgm_ray import grid as tune_grid
from qgm_ray.errors import ConfigError
from qgm_ray.runner.metrics_file import MetricsFile, read_history

RESULT_COLUMNS = ["trial", "algorithm", "alpha", "topology", "n_clients", "seed", "lr",
                  "final_test_accuracy", "best_test_accuracy", "status", "rounds", "wall_seconds", "trial_dir"]
# Config keys that already have a column of their own in results.csv.
STANDARD_KEYS = {"algorithm.name": "algorithm", "data.alpha": "alpha", "topology.name": "topology",
                 "topology.n_clients": "n_clients", "seed": "seed", "algorithm.lr": "lr"}
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
# Bytes to target: without a target given, this fraction of the best final accuracy of the
# table's column (a section at one alpha): reachable by every row that nearly matches the best.
TARGET_FRACTION = 0.9

PNG_DPI = 120
PLOTTED = ("epoch", "lr", "train_loss", "test_accuracy", "consensus_distance")   # metrics.csv columns a run's curves draw


def _column(key: str) -> str:
    return STANDARD_KEYS.get(key, key)


# ================================================================ results.csv

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


# ================================================================ table.md (pure pandas)

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


def _fmt_cell(rec: pd.Series, hp_cols: list[str]) -> str:
    if rec["n"] == 0:
        bad = [f"{rec[f'n_{s}']} {s}" for s in ("diverged", "failed", "stopped", "interrupted") if rec[f"n_{s}"]]
        return ", ".join(bad) or "-"
    text = f"{100 * rec['mean']:.2f}"
    if not math.isnan(rec["std"]):
        text += f" ± {100 * rec['std']:.2f}"
    # A hyper-parameter only some branches set is NaN in the others' cells: not named there.
    named = [c for c in hp_cols if not _missing(rec[c])]
    if named:
        edge = rec.get("edge") if isinstance(rec.get("edge"), str) else ""
        text += " (" + ", ".join(f"{c.rsplit('.', 1)[-1]} {rec[c]:.3g}" if isinstance(rec[c], float)
                                 else f"{c.rsplit('.', 1)[-1]} {rec[c]}" for c in named) \
            + (f"; {edge}" if edge else "") + ")"
    notes = [f"{rec[f'n_{s}']}/{rec['n_trials']} {s}" for s in ("diverged", "failed", "stopped", "interrupted")
             if rec[f"n_{s}"]]
    if notes:
        text += " [" + ", ".join(notes) + "]"
    return text


def _alpha_text(a) -> str:
    return f"{a:g}"


def accuracy_tables(df: pd.DataFrame, param_keys=(), value: str = "final_test_accuracy",
                    mode: str = "max", algo_order=(), grid: Optional[dict] = None,
                    order=()) -> list[tuple[str, pd.DataFrame]]:
    """[(section title, table)]: rows = algorithms (in order of appearance), each variant of a
    rule or compressor a row of its own (`row_label`; `order`: the labels' order, as
    `label_order` gives it), columns = alpha (descending: near-iid first, as in the paper),
    cells = formatted strings, best in bold. A tuned cell names its winning setting and, when
    it is at an end of the grid, says so."""
    sections, hparams = split_keys(param_keys)
    variants = variant_keys(param_keys)
    hp_cols = [_column(k) for k in hparams]
    sec_cols = [_column(k) for k in sections]
    stats = cell_stats(df, value, hparams, sections, mode, grid, variants)
    if stats.empty:
        return []
    stats["label"] = row_labels(stats, param_keys)
    algos = list(dict.fromkeys(list(algo_order) + list(df["algorithm"])))
    alphas = sorted(df["alpha"].dropna().unique(), reverse=True)
    tables = []
    for title, g in _sections(stats, sec_cols):
        rows = _ordered(g["label"], g["algorithm"], algos, order)
        table = pd.DataFrame("", index=rows, columns=[f"α = {_alpha_text(a)}" for a in alphas])
        table.index.name = "algorithm"
        for a in alphas:
            col = g[g["alpha"] == a]
            best = col["mean"].max() if mode == "max" else col["mean"].min()
            for _, rec in col.iterrows():
                text = _fmt_cell(rec, hp_cols)
                if rec["n"] and rec["mean"] == best and len(col) > 1:
                    head, sep, rest = text.partition(" ")
                    text = f"**{head}**{sep}{rest}"
                table.loc[rec["label"], f"α = {_alpha_text(a)}"] = text
        tables.append((title, table))
    return tables


# ---------------------------------------------------------------- bytes to a target accuracy

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


def to_markdown(table: pd.DataFrame) -> str:
    head = [table.index.name or ""] + list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + [":---:"] * len(table.columns)) + "|"]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


def _lr_text(base: dict) -> str:
    tc = base.get("tune", {})
    if "algorithm.lr" in tc.get("grid", {}):
        return "lr tuned per cell over {" + ", ".join(f"{v:g}" for v in tc["grid"]["algorithm.lr"]) + "}"
    if "algorithm.lr" in tc.get("search", {}):
        (kind, arg), = tc["search"]["algorithm.lr"].items()
        return f"lr searched ({kind} {arg})"
    return f"lr {base['algorithm']['lr']:g}"


def table_markdown(df: pd.DataFrame, base: Optional[dict] = None, param_keys=(),
                   histories: Optional[pd.DataFrame] = None, target: Optional[float] = None) -> str:
    """table.md: the accuracy table(s) and, given the trials' `histories` with bytes, the bytes
    each row sent to reach the target accuracy (`target`, else TARGET_FRACTION of its column's best)."""
    base = base or {}
    tc = base.get("tune", {})
    value = "final_test_accuracy"
    seeds = sorted(df["seed"].dropna().unique())
    lines = ["# Test accuracy (%) by algorithm and heterogeneity", ""]
    if base:
        s = base["schedule"]
        lines.append(f"{base['data']['name']}, model {base['model']['name']}, "
                     f"{base['topology']['name']} n={base['topology']['n_clients']}, "
                     f"{s['epochs']:g} epochs, batch {base['data']['batch_size']}/client, "
                     f"{_lr_text(base)}, backend {base['backend']}.")
    sections, hparams = split_keys(param_keys)
    grid = tc.get("grid", {}) if base else None
    lines.append(f"Cells: test accuracy of the averaged model at the end of training, mean ± std "
                 f"(sample std) over {len(seeds)} seed(s) of the completed trials; Dirichlet alpha: "
                 f"10 is near iid, 0.1 about one class per client. Bold: best in its column."
                 + (f" Hyper-parameters {', '.join(hparams)}: the best setting per cell (by mean over seeds;"
                    f" a setting that diverged on any seed ranks after those that never did), named in"
                    f" parentheses, with \"= grid max\" / \"= grid min\" when it is the largest / smallest"
                    f" value of its grid (the optimum may lie outside: widen that grid); the bracket"
                    f" counts every trial of the cell, all settings included." if hparams else "")
                 + " [k/n status]: trials that did not complete (diverged, failed, stopped by the scheduler"
                   " or interrupted) are left out of the mean.")
    lines.append("")
    order = label_order(base, param_keys)
    algo_order = [p.get("algorithm.name") for p in tune_grid.points(grid or {}) if "algorithm.name" in p]
    variants = variant_keys(param_keys)
    if variants:
        lines += [f"Rows: each value of {', '.join(variants)} a row of its own, named after the algorithm "
                  f"(a key a trial's branch does not set is left out of its name).", ""]
    for title, table in accuracy_tables(df, param_keys, value, tc.get("mode", "max"), algo_order, grid, order):
        if title:
            lines += [f"## {title}", ""]
        lines += [to_markdown(table), ""]
    if hparams:
        stats = cell_stats(df, value, hparams, sections, tc.get("mode", "max"), grid, variants)
        edges = stats[stats["edge"].fillna("") != ""] if "edge" in stats.columns else stats.iloc[:0]
        if len(edges):
            cells = [" ".join([f"{c} {r[c]}" for c in (_column(k) for k in sections)]
                              + [row_label(r, [k for k in variants if k in stats.columns]),
                                 f"α = {_alpha_text(r['alpha'])}"]) + f" ({r['edge']})"
                     for _, r in edges.iterrows()]
            lines += [f"Best setting at an edge of its grid in {len(edges)} of {len(stats)} cells "
                      f"(widen the grid there): " + "; ".join(cells) + ".", ""]
        else:
            lines += [f"No cell has its best setting at an edge of the grid ({len(stats)} cells).", ""]
    if histories is not None:
        tables = bytes_tables(df, histories, param_keys, target, algo_order, order)
        if tables:
            aim = (f"test accuracy {100 * target:.2f}%" if target is not None else
                   f"{100 * TARGET_FRACTION:g}% of the best final test accuracy in its column")
            lines += ["# Bytes sent to reach the target accuracy", "",
                      f"Cells: `bytes_sent` (every client's payload bytes, cumulative) at the first evaluation "
                      f"whose test accuracy reaches the target ({aim}; `report --target` sets another), mean "
                      f"over the seeds that reach it, of the trials that ran to their end"
                      + (" with the cell's best setting" if hparams else "") + "; [k/n reached] when some "
                      "seeds do not, \"not reached\" when none does. Bold: fewest bytes in its column.", ""]
            for title, table in tables:
                if title:
                    lines += [f"## {title}", ""]
                lines += [to_markdown(table), ""]
        tables = bytes_tables(df, histories, param_keys, target, algo_order, order, column="sim_seconds")
        if tables:
            lines += ["# Simulated time to reach the target accuracy", "",
                      "Cells: `sim_seconds` (the modelled system's time, `clock:` in the config) at the first "
                      "evaluation whose test accuracy reaches the same target, as above. Bold: the shortest "
                      "in its column.", ""]
            for title, table in tables:
                if title:
                    lines += [f"## {title}", ""]
                lines += [to_markdown(table), ""]
    counts = df["status"].value_counts().to_dict()
    lines.append(f"{len(df)} trials: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".")
    return "\n".join(lines) + "\n"


# ================================================================ histories / partitions

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


# ================================================================ figures

def _subplots(*args, figsize, **kwargs):
    """A figure of its own (matplotlib's object API, not pyplot): no global backend to switch and
    no figure registry to close, so reports drawn inside a notebook leave its inline plots alone."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _colors(labels) -> dict:
    """The same colour for a row (an algorithm and its variant) in every figure of a report;
    past ten rows, tab20."""
    import matplotlib
    labels = list(dict.fromkeys(labels))
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {a: cmap(i % cmap.N) for i, a in enumerate(labels)}


def _save(fig, path: Path, data: Optional[tuple[str, str]] = None) -> Path:
    """Write the figure; with `data` (the x and y column names), also every labelled line of
    every panel as drawn, to the CSV of the same name: the figure's numbers for a reader (a
    test, another plotting tool) that does not read pixels."""
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    if data is not None:
        rows = []
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_label().startswith("_"):   # matplotlib's name for an unlabelled line
                    continue
                rows += [{"panel": ax.get_title(), "line": line.get_label(), data[0]: x, data[1]: y}
                         for x, y in zip(line.get_xdata(), line.get_ydata())]
        pd.DataFrame(rows, columns=["panel", "line", *data]).to_csv(Path(path).with_suffix(".csv"), index=False)
    return path


def plot_accuracy_vs_alpha(df: pd.DataFrame, path: Path, param_keys=()) -> Optional[Path]:
    sections, hparams = split_keys(param_keys)
    stats = cell_stats(df, "final_test_accuracy", hparams, sections, variants=variant_keys(param_keys))
    if stats.empty:   # no trial at all: cell_stats has no columns to select
        return None
    stats = stats[stats["n"] > 0].copy()
    if stats.empty or df["alpha"].nunique() < 1:
        return None
    stats["label"] = row_labels(stats, param_keys)
    sec_cols = [_column(k) for k in sections]
    colors = _colors(row_labels(df, param_keys))
    groups = list(stats.groupby(sec_cols, sort=False)) if sec_cols else [((), stats)]
    fig, axes = _subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (key, g) in zip(axes[0], groups):
        for label in colors:
            a = g[g["label"] == label].sort_values("alpha")
            if len(a):
                ax.errorbar(a["alpha"], 100 * a["mean"], yerr=100 * a["std"].fillna(0), marker="o",
                            capsize=3, label=label, color=colors[label])
        ax.set_xscale("log")
        ax.set_xlabel("Dirichlet alpha (log; small = more heterogeneous)")
        ax.set_ylabel("final test accuracy (%)")
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(", ".join(f"{c}={v}" for c, v in zip(sec_cols, key)) or "test accuracy vs heterogeneity")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def lr_curves(df: pd.DataFrame, value: str = "final_test_accuracy", param_keys=()) -> pd.DataFrame:
    """One row per (row label, alpha, lr): mean of `value` over the seeds that completed, and how
    many seeds completed / did not (diverged, failed, ...). Pure pandas; the data of lr_sensitivity.png."""
    out = []
    labelled = df.assign(label=row_labels(df, param_keys))
    for (label, algo, alpha, lr), g in labelled.groupby(["label", "algorithm", "alpha", "lr"], sort=False):
        ok = g[g["status"] == "completed"]
        out.append({"label": label, "algorithm": algo, "alpha": alpha, "lr": lr, "n_completed": len(ok),
                    "n_other": len(g) - len(ok), "mean": ok[value].mean() if len(ok) else np.nan})
    return pd.DataFrame(out, columns=["label", "algorithm", "alpha", "lr", "n_completed", "n_other", "mean"])


def plot_lr_sensitivity(df: pd.DataFrame, path: Path, param_keys=()) -> Optional[Path]:
    """Final test accuracy against lr, a panel per alpha, a line per row (mean over the seeds
    that completed). An x marks an lr at which some seed did not complete (diverged): drawn at its
    completed seeds' mean, or at 0 when none did. Only for a sweep with algorithm.lr on a grid."""
    sections, hparams = split_keys(param_keys)
    if "algorithm.lr" not in hparams or sections or df["lr"].nunique() < 2:
        return None
    curves = lr_curves(df, param_keys=param_keys)
    alphas = sorted(curves["alpha"].dropna().unique(), reverse=True)
    if not alphas:
        return None
    colors = _colors(curves["label"])
    fig, axes = _subplots(1, len(alphas), figsize=(4.6 * len(alphas), 4), squeeze=False, sharey=True)
    for ax, alpha in zip(axes[0], alphas):
        for label in colors:
            c = curves[(curves["label"] == label) & (curves["alpha"] == alpha)].sort_values("lr")
            if c.empty:
                continue
            y = 100 * c["mean"].fillna(0.0)
            ax.plot(c["lr"], y, marker="o", color=colors[label], label=label)
            bad = c["n_other"] > 0
            ax.scatter(c["lr"][bad], y[bad], marker="x", s=70, color=colors[label], zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("lr (log)")
        ax.set_title(f"alpha = {alpha:g}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("final test accuracy (%), mean over completed seeds")
    axes[0][-1].legend(fontsize=8, title="x: a seed diverged", title_fontsize=8)
    return _save(fig, path)


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


def _labelled(df: pd.DataFrame, histories: pd.DataFrame, param_keys=()) -> pd.DataFrame:
    """The histories of `best_trials`, each row with its trial's row label (`label`), that label
    followed by the trial's section values (`series`), its sections, alpha and status."""
    sel = best_trials(df, param_keys)
    sections, _ = split_keys(param_keys)
    sec_cols = [_column(k) for k in sections]
    labels = row_labels(sel, param_keys)
    sel = sel.assign(label=labels, series=[" ".join([lab] + [str(r[c]) for c in sec_cols])
                                           for lab, (_, r) in zip(labels, sel.iterrows())])
    return histories.merge(sel[["trial", "algorithm", "label", "series", "alpha", "status"] + sec_cols], on="trial")


def plot_curves(df: pd.DataFrame, histories: pd.DataFrame, alpha: float, path: Path,
                param_keys=()) -> Optional[Path]:
    """Test accuracy and consensus distance over epochs at one alpha: mean over seeds (band: min..max)."""
    if histories.empty:
        return None
    h = _labelled(df, histories, param_keys)
    h = h[np.isclose(h["alpha"], alpha)]
    if h.empty:
        return None
    colors = _colors(h["series"])
    fig, (ax1, ax2) = _subplots(1, 2, figsize=(11, 4))
    for label, g in h.groupby("series", sort=False):
        agg = g.groupby("epoch").agg(acc=("test_accuracy", "mean"), acc_lo=("test_accuracy", "min"),
                                     acc_hi=("test_accuracy", "max"), cd=("consensus_distance", "mean"))
        line, = ax1.plot(agg.index, 100 * agg["acc"], label=label, color=colors[label])
        ax1.fill_between(agg.index, 100 * agg["acc_lo"], 100 * agg["acc_hi"], color=line.get_color(), alpha=0.15)
        ax2.plot(agg.index, agg["cd"], label=label, color=line.get_color())
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy of the averaged model (%)")
    ax1.set_title(f"alpha = {alpha:g}: test accuracy (mean over seeds, band min..max)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("consensus distance")
    ax2.set_yscale("log")
    ax2.set_title(f"alpha = {alpha:g}: consensus distance")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


# Columns of accuracy_vs_bytes.csv: what each figure of accuracy against bytes draws.
BYTES_DATA = ("bytes_sent", "test_accuracy_percent")


def _sent(h: pd.DataFrame) -> pd.DataFrame:
    """Evaluations a log axis of bytes can draw: some bytes sent (not the one before any round,
    nor a run that sends nothing), from a metrics.csv that counts them."""
    if "bytes_sent" not in h.columns:
        return h.iloc[:0]
    return h[np.isfinite(h["bytes_sent"]) & (h["bytes_sent"] > 0)]


def plot_accuracy_vs_bytes(df: pd.DataFrame, histories: pd.DataFrame, path: Path, param_keys=(),
                           targets: Optional[dict] = None, order=()) -> Optional[Path]:
    """Test accuracy against the bytes sent so far (`bytes_sent`, every client's, log axis), a panel
    per (section, alpha), a line per row (its best setting; mean over seeds of both at each
    evaluation), in the table's order (`order`: `label_order`). `targets` {(section..., alpha):
    accuracy}: drawn as a dotted line. Its data: the CSV of the same name."""
    if histories.empty:
        return None
    h = _sent(_labelled(df, histories, param_keys))
    if h.empty:
        return None
    sections, _ = split_keys(param_keys)
    sec_cols = [_column(k) for k in sections]
    # Near-iid first, as the table's columns.
    panels = sorted(h.groupby(sec_cols + ["alpha"], sort=False), key=lambda item: -item[0][-1])
    colors = _colors(_ordered(h["label"], h["algorithm"], order=order))
    fig, axes = _subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (key, g) in zip(axes[0], panels):
        key = key if isinstance(key, tuple) else (key,)
        for label in colors:
            r = g[g["label"] == label]
            if r.empty:
                continue
            agg = r.groupby("epoch").agg(b=("bytes_sent", "mean"), acc=("test_accuracy", "mean")).sort_values("b")
            ax.plot(agg["b"], 100 * agg["acc"], marker=".", label=label, color=colors[label])
        if targets and key in targets:
            ax.axhline(100 * targets[key], linestyle=":", color="gray")
        ax.set_xscale("log")
        ax.set_xlabel("bytes sent, all clients (log)")
        ax.set_title(", ".join(f"{c}={v}" for c, v in zip(sec_cols, key[:-1])) + (", " if sec_cols else "")
                     + f"alpha = {key[-1]:g}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("test accuracy of the averaged model (%)")
    return _save(fig, path, BYTES_DATA)


def plot_run_bytes(metrics: pd.DataFrame, path: Path, title: str = "") -> Optional[Path]:
    """A run's test accuracy against the bytes it has sent (log axis); its data: the CSV of the
    same name."""
    m = _sent(metrics)
    if m.empty:
        return None
    fig, ax = _subplots(figsize=(5.5, 4.2))
    ax.plot(m["bytes_sent"], 100 * m["test_accuracy"], marker=".", label="averaged model")
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent, all clients (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "test accuracy vs bytes sent", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, BYTES_DATA)


def _class_columns(part: pd.DataFrame) -> list[str]:
    return [c for c in part.columns if c.startswith("class_")]


def plot_partitions(parts: list[tuple[str, pd.DataFrame]], path: Path) -> Optional[Path]:
    """Heat-map per partition: clients x classes, number of samples."""
    parts = [(t, p) for t, p in parts if len(p)]
    if not parts:
        return None
    n_clients = max(len(p) for _, p in parts)
    fig, axes = _subplots(1, len(parts), figsize=(4.2 * len(parts), 1.5 + 0.25 * n_clients), squeeze=False)
    for ax, (title, p) in zip(axes[0], parts):
        classes = _class_columns(p)
        counts = p[classes].to_numpy(dtype=float)
        im = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels([c.removeprefix("class_") for c in classes], fontsize=7)
        ax.set_yticks(range(len(p)))
        ax.set_yticklabels([str(c) for c in p["client"]], fontsize=7)
        ax.set_xlabel("class")
        ax.set_ylabel("client")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="samples")
    return _save(fig, path)


def plot_run_curves(metrics: pd.DataFrame, path: Path, title: str = "") -> Optional[Path]:
    if metrics.empty:
        return None
    fig, axes = _subplots(2, 2, figsize=(10, 7))
    x = metrics["epoch"]
    ax = axes[0, 0]
    ax.plot(x, 100 * metrics["test_accuracy"], label="averaged model")
    if "local_test_accuracy" in metrics and metrics["local_test_accuracy"].notna().any():
        ax.plot(x, 100 * metrics["local_test_accuracy"], label="local models (mean)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    axes[0, 1].plot(x, metrics["train_loss"], label="train loss")
    if "test_loss" in metrics and metrics["test_loss"].notna().any():
        axes[0, 1].plot(x, metrics["test_loss"], label="test loss (averaged model)")
    axes[0, 1].set_ylabel("loss")
    axes[0, 1].legend(fontsize=8)
    axes[1, 0].plot(x, metrics["consensus_distance"])
    axes[1, 0].set_ylabel("consensus distance")
    if (metrics["consensus_distance"] > 0).all():
        axes[1, 0].set_yscale("log")
    axes[1, 1].plot(x, metrics["lr"])
    axes[1, 1].set_ylabel("learning rate")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_accuracy_vs_time(metrics: pd.DataFrame, path: Path, title: str = "") -> Optional[Path]:
    """Test accuracy against simulated time (metrics.csv's sim_seconds, qgm_ray/clock.py); None
    for a run written before the clock (no sim_seconds)."""
    if "sim_seconds" not in metrics or not metrics["sim_seconds"].notna().any():
        return None
    fig, ax = _subplots(figsize=(6, 4))
    timed = metrics[metrics["sim_seconds"].notna()]
    ax.plot(timed["sim_seconds"], 100 * timed["test_accuracy"], marker=".", label="averaged model")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


# ================================================================ entry points

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
