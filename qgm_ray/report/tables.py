"""table.md (pure pandas): the accuracy table per section, algorithms x alpha with the best in
bold, each tuned cell naming its winning setting, followed by the bytes and simulated time
each row took to reach the target accuracy."""
from __future__ import annotations

import math
from typing import Optional

import pandas as pd

from qgm_ray import grid as tune_grid
from qgm_ray.report.cells import (
    _alpha_text,
    _missing,
    _ordered,
    _sections,
    cell_stats,
    label_order,
    row_label,
    row_labels,
    split_keys,
    variant_keys,
)
from qgm_ray.report.reach import TARGET_FRACTION, bytes_tables
from qgm_ray.report.results import _column


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
    sections, hparams = split_keys(param_keys)
    if base:
        s = base["schedule"]
        # A topology the sweep varies is named by each section's heading instead.
        topo = ("" if any(k.startswith("topology.") for k in sections) else
                f"{base['topology']['name']} n={base['topology']['n_clients']}, ")
        lines.append(f"{base['data']['name']}, model {base['model']['name']}, {topo}"
                     f"{s['epochs']:g} epochs, batch {base['data']['batch_size']}/client, "
                     f"{_lr_text(base)}, backend {base['backend']}.")
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

