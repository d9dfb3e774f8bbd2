"""Tables and figures from a run directory or a sweep directory.

    python main.py report runs/tune_heterogeneity-20261125-101500   # a sweep
    python main.py report runs/default-20261125-101500              # one run

A sweep gets `results.csv` (a row per trial), `histories.csv` (every trial's metrics.csv, long
format), `partitions.csv` (one partition per alpha), `table.md` (algorithms x alpha, mean ± std
over seeds, like Table 1 of the QGM paper; for a hyper-parameter search, the best value per cell)
and PNG figures (for an lr grid also lr_sensitivity.png: accuracy against lr per alpha). A run gets its curves and its partition heat-map.

The table functions are pure pandas (testable without Tune); the figures use matplotlib's Agg
backend, so no display is needed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from qgm_ray.errors import ConfigError
from qgm_ray.runner.metrics_file import MetricsFile, read_history

RESULT_COLUMNS = ["trial", "algorithm", "alpha", "topology", "n_clients", "seed", "lr",
                  "final_test_accuracy", "best_test_accuracy", "status", "rounds", "wall_seconds", "trial_dir"]
# Config keys that already have a column of their own in results.csv.
STANDARD_KEYS = {"algorithm.name": "algorithm", "data.alpha": "alpha", "topology.name": "topology",
                 "topology.n_clients": "n_clients", "seed": "seed", "algorithm.lr": "lr"}
# Grid keys with these prefixes are hyper-parameters: the table shows the best value per cell.
# Any other grid key (topology, model, data options) splits the table in sections.
HPARAM_PREFIXES = ("algorithm.", "schedule.", "data.batch_size")
CELL_KEYS = ("algorithm.name", "data.alpha", "seed")

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


def rows_from_trial_dirs(sweep_dir: Path, base: dict) -> list[dict]:
    """results.csv rebuilt from the trial directories alone (no Tune): for `report` on a sweep
    whose driver died before writing it."""
    from qgm_ray.config import config_dict, get_dotted

    keys = list(base["tune"]["grid"]) + list(base["tune"]["search"])
    rows = []
    for trial in sorted((Path(sweep_dir) / "trials").glob("*/config.yaml")):
        d = config_dict(trial)
        params = {k: get_dotted(d, k) for k in keys}
        rows.append(trial_row(sweep_dir, base, trial.parent.relative_to(sweep_dir), params, {}, "interrupted"))
    return rows


# ================================================================ table.md (pure pandas)

def split_keys(param_keys) -> tuple[list[str], list[str]]:
    """(section keys, hyper-parameter keys) among a sweep's grid/search keys."""
    sections, hparams = [], []
    for k in param_keys:
        if k in CELL_KEYS:
            continue
        (hparams if k.startswith(HPARAM_PREFIXES) else sections).append(k)
    return sections, hparams


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
               mode: str = "max", grid: Optional[dict] = None) -> pd.DataFrame:
    """One row per (section..., algorithm, alpha): mean / std over the seeds of completed trials,
    counts by status and, when `hparams` were tuned, the best setting (by mean) and its stats.

    `edge` names the winning hyper-parameter values that sit at an end of their grid
    (`grid_edges`). `grid` {dotted key: values} is the sweep's tune.grid: only its keys are
    judged, against every value of the grid (a partial sweep may not have tried them all yet);
    without it, every hyper-parameter is judged against the values the cell tried."""
    hp_cols = [_column(k) for k in hparams]
    sec_cols = [_column(k) for k in sections]
    cell = sec_cols + ["algorithm", "alpha"]
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
            tried = ({_column(k): grid[k] for k in hparams if k in grid} if grid is not None
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
    if hp_cols:
        edge = rec.get("edge") if isinstance(rec.get("edge"), str) else ""
        text += " (" + ", ".join(f"{c.rsplit('.', 1)[-1]} {rec[c]:.3g}" if isinstance(rec[c], float)
                                 else f"{c.rsplit('.', 1)[-1]} {rec[c]}" for c in hp_cols) \
            + (f"; {edge}" if edge else "") + ")"
    notes = [f"{rec[f'n_{s}']}/{rec['n_trials']} {s}" for s in ("diverged", "failed", "stopped", "interrupted")
             if rec[f"n_{s}"]]
    if notes:
        text += " [" + ", ".join(notes) + "]"
    return text


def _alpha_text(a) -> str:
    return f"{a:g}"


def accuracy_tables(df: pd.DataFrame, param_keys=(), value: str = "final_test_accuracy",
                    mode: str = "max", algo_order=(), grid: Optional[dict] = None) -> list[tuple[str, pd.DataFrame]]:
    """[(section title, table)]: rows = algorithms (in order of appearance), columns = alpha
    (descending: near-iid first, as in the paper), cells = formatted strings, best in bold.
    A tuned cell names its winning setting and, when it is at an end of the grid, says so."""
    sections, hparams = split_keys(param_keys)
    hp_cols = [_column(k) for k in hparams]
    sec_cols = [_column(k) for k in sections]
    stats = cell_stats(df, value, hparams, sections, mode, grid)
    if stats.empty:
        return []
    algos = list(dict.fromkeys(list(algo_order) + list(df["algorithm"])))
    alphas = sorted(df["alpha"].dropna().unique(), reverse=True)
    groups = stats.groupby(sec_cols, sort=False, dropna=False) if sec_cols else [((), stats)]
    tables = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        title = ", ".join(f"{c} = {v}" for c, v in zip(sec_cols, key))
        table = pd.DataFrame("", index=algos, columns=[f"α = {_alpha_text(a)}" for a in alphas])
        table.index.name = "algorithm"
        for a in alphas:
            col = g[g["alpha"] == a]
            best = col["mean"].max() if mode == "max" else col["mean"].min()
            for _, rec in col.iterrows():
                text = _fmt_cell(rec, hp_cols)
                if rec["n"] and rec["mean"] == best and len(col) > 1:
                    head, sep, rest = text.partition(" ")
                    text = f"**{head}**{sep}{rest}"
                table.loc[rec["algorithm"], f"α = {_alpha_text(a)}"] = text
        tables.append((title, table.loc[[a for a in algos if a in set(g["algorithm"])]]))
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


def table_markdown(df: pd.DataFrame, base: Optional[dict] = None, param_keys=()) -> str:
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
    order = tc.get("grid", {}).get("algorithm.name", [])
    for title, table in accuracy_tables(df, param_keys, value, tc.get("mode", "max"), order, grid):
        if title:
            lines += [f"## {title}", ""]
        lines += [to_markdown(table), ""]
    if hparams:
        stats = cell_stats(df, value, hparams, sections, tc.get("mode", "max"), grid)
        edges = stats[stats["edge"].fillna("") != ""] if "edge" in stats.columns else stats.iloc[:0]
        if len(edges):
            cells = [" ".join([f"{c} {r[c]}" for c in (_column(k) for k in sections)]
                              + [str(r["algorithm"]), f"α = {_alpha_text(r['alpha'])}"]) + f" ({r['edge']})"
                     for _, r in edges.iterrows()]
            lines += [f"Best setting at an edge of its grid in {len(edges)} of {len(stats)} cells "
                      f"(widen the grid there): " + "; ".join(cells) + ".", ""]
        else:
            lines += [f"No cell has its best setting at an edge of the grid ({len(stats)} cells).", ""]
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

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colors(df: pd.DataFrame) -> dict:
    """The same colour for an algorithm in every figure of a report."""
    import matplotlib
    cmap = matplotlib.colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(dict.fromkeys(df["algorithm"]))}


def plot_accuracy_vs_alpha(df: pd.DataFrame, path: Path, param_keys=()) -> Optional[Path]:
    sections, hparams = split_keys(param_keys)
    stats = cell_stats(df, "final_test_accuracy", hparams, sections)
    if stats.empty:   # no trial at all: cell_stats has no columns to select
        return None
    stats = stats[stats["n"] > 0]
    if stats.empty or df["alpha"].nunique() < 1:
        return None
    plt = _plt()
    sec_cols = [_column(k) for k in sections]
    colors = _colors(df)
    groups = list(stats.groupby(sec_cols, sort=False)) if sec_cols else [((), stats)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (key, g) in zip(axes[0], groups):
        for algo in dict.fromkeys(df["algorithm"]):
            a = g[g["algorithm"] == algo].sort_values("alpha")
            if len(a):
                ax.errorbar(a["alpha"], 100 * a["mean"], yerr=100 * a["std"].fillna(0), marker="o",
                            capsize=3, label=algo, color=colors[algo])
        ax.set_xscale("log")
        ax.set_xlabel("Dirichlet alpha (log; small = more heterogeneous)")
        ax.set_ylabel("final test accuracy (%)")
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(", ".join(f"{c}={v}" for c, v in zip(sec_cols, key)) or "test accuracy vs heterogeneity")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def lr_curves(df: pd.DataFrame, value: str = "final_test_accuracy") -> pd.DataFrame:
    """One row per (algorithm, alpha, lr): mean of `value` over the seeds that completed, and how
    many seeds completed / did not (diverged, failed, ...). Pure pandas; the data of lr_sensitivity.png."""
    out = []
    for (algo, alpha, lr), g in df.groupby(["algorithm", "alpha", "lr"], sort=False):
        ok = g[g["status"] == "completed"]
        out.append({"algorithm": algo, "alpha": alpha, "lr": lr, "n_completed": len(ok),
                    "n_other": len(g) - len(ok), "mean": ok[value].mean() if len(ok) else np.nan})
    return pd.DataFrame(out, columns=["algorithm", "alpha", "lr", "n_completed", "n_other", "mean"])


def plot_lr_sensitivity(df: pd.DataFrame, path: Path, param_keys=()) -> Optional[Path]:
    """Final test accuracy against lr, a panel per alpha, a line per algorithm (mean over the seeds
    that completed). An x marks an lr at which some seed did not complete (diverged): drawn at its
    completed seeds' mean, or at 0 when none did. Only for a sweep with algorithm.lr on a grid."""
    sections, hparams = split_keys(param_keys)
    if "algorithm.lr" not in hparams or sections or df["lr"].nunique() < 2:
        return None
    curves = lr_curves(df)
    alphas = sorted(curves["alpha"].dropna().unique(), reverse=True)
    if not alphas:
        return None
    plt = _plt()
    colors = _colors(df)
    fig, axes = plt.subplots(1, len(alphas), figsize=(4.6 * len(alphas), 4), squeeze=False, sharey=True)
    for ax, alpha in zip(axes[0], alphas):
        for algo in dict.fromkeys(df["algorithm"]):
            c = curves[(curves["algorithm"] == algo) & (curves["alpha"] == alpha)].sort_values("lr")
            if c.empty:
                continue
            y = 100 * c["mean"].fillna(0.0)
            ax.plot(c["lr"], y, marker="o", color=colors[algo], label=algo)
            bad = c["n_other"] > 0
            ax.scatter(c["lr"][bad], y[bad], marker="x", s=70, color=colors[algo], zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("lr (log)")
        ax.set_title(f"alpha = {alpha:g}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("final test accuracy (%), mean over completed seeds")
    axes[0][-1].legend(fontsize=8, title="x: a seed diverged", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def best_trials(df: pd.DataFrame, param_keys=()) -> pd.DataFrame:
    """For a hyper-parameter sweep, only the trials of each cell's best setting."""
    sections, hparams = split_keys(param_keys)
    if not hparams:
        return df
    stats = cell_stats(df, "final_test_accuracy", hparams, sections)
    keys = [_column(k) for k in sections] + ["algorithm", "alpha"] + [_column(k) for k in hparams]
    keep = stats[stats["n"] > 0][keys]
    return df.merge(keep, on=keys, how="inner")


def plot_curves(df: pd.DataFrame, histories: pd.DataFrame, alpha: float, path: Path,
                param_keys=()) -> Optional[Path]:
    """Test accuracy and consensus distance over epochs at one alpha: mean over seeds (band: min..max)."""
    if histories.empty:
        return None
    sel = best_trials(df, param_keys)
    sel = sel[np.isclose(sel["alpha"], alpha)]
    sections, _ = split_keys(param_keys)
    label_cols = ["algorithm"] + [_column(k) for k in sections]
    h = histories.merge(sel[["trial"] + label_cols], on="trial")
    if h.empty:
        return None
    plt = _plt()
    colors = _colors(df)
    styles = ["-", "--", ":", "-."]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (key, g) in enumerate(h.groupby(label_cols, sort=False)):
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(str(k) for k in key)
        agg = g.groupby("epoch").agg(acc=("test_accuracy", "mean"), acc_lo=("test_accuracy", "min"),
                                     acc_hi=("test_accuracy", "max"), cd=("consensus_distance", "mean"))
        style = styles[(i // len(colors)) % len(styles)] if len(label_cols) > 1 else "-"
        line, = ax1.plot(agg.index, 100 * agg["acc"], label=label, color=colors[key[0]], linestyle=style)
        ax1.fill_between(agg.index, 100 * agg["acc_lo"], 100 * agg["acc_hi"], color=line.get_color(), alpha=0.15)
        ax2.plot(agg.index, agg["cd"], label=label, color=line.get_color(), linestyle=style)
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
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def _class_columns(part: pd.DataFrame) -> list[str]:
    return [c for c in part.columns if c.startswith("class_")]


def plot_partitions(parts: list[tuple[str, pd.DataFrame]], path: Path) -> Optional[Path]:
    """Heat-map per partition: clients x classes, number of samples."""
    parts = [(t, p) for t, p in parts if len(p)]
    if not parts:
        return None
    plt = _plt()
    n_clients = max(len(p) for _, p in parts)
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 1.5 + 0.25 * n_clients), squeeze=False)
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
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def plot_run_curves(metrics: pd.DataFrame, path: Path, title: str = "") -> Optional[Path]:
    if metrics.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
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
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def plot_accuracy_vs_time(metrics: pd.DataFrame, path: Path, title: str = "") -> Optional[Path]:
    """Test accuracy against simulated time (metrics.csv's sim_seconds, qgm_ray/clock.py); None
    for a run written before the clock (no sim_seconds)."""
    if "sim_seconds" not in metrics or not metrics["sim_seconds"].notna().any():
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    timed = metrics[metrics["sim_seconds"].notna()]
    ax.plot(timed["sim_seconds"], 100 * timed["test_accuracy"], marker=".", label="averaged model")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


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


def write_sweep_report(sweep_dir: Path, df: pd.DataFrame) -> list[Path]:
    """results.csv, histories.csv, partitions.csv, table.md and the figures of a sweep."""
    sweep_dir = Path(sweep_dir)
    base = _sweep_base(sweep_dir)
    tc = base.get("tune", {})
    param_keys = list(tc.get("grid", {})) + list(tc.get("search", {}))
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

    (sweep_dir / "table.md").write_text(table_markdown(df, base, param_keys))
    written.append(sweep_dir / "table.md")

    written.append(plot_accuracy_vs_alpha(df, sweep_dir / "accuracy_vs_alpha.png", param_keys))
    written.append(plot_lr_sensitivity(df, sweep_dir / "lr_sensitivity.png", param_keys))
    if len(df) and df["alpha"].notna().any():
        a = float(df["alpha"].min())
        written.append(plot_curves(df, histories, a, sweep_dir / f"curves_alpha{a:g}.png", param_keys))
    if not parts.empty:
        panels = [(f"alpha = {a:g} (seed {int(g['seed'].iloc[0])})", g.drop(columns=["alpha", "seed"]))
                  for a, g in sorted(parts.groupby("alpha"), key=lambda item: -item[0])]
        written.append(plot_partitions(panels, sweep_dir / "partitions.png"))
    return [p for p in written if p is not None]


def make_report(path: str | Path) -> list[Path]:
    """Tables and figures for a sweep directory (results.csv / tune/) or a run directory
    (metrics.csv). Returns the files written."""
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
            df = results_frame(rows_from_trial_dirs(path, base),
                               list(base["tune"]["grid"]) + list(base["tune"]["search"]))
        else:
            raise ConfigError(f"report {path}: a sweep directory without results.csv or trials/")
        return write_sweep_report(path, df)
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
        if (path / "partition.csv").is_file():
            written.append(plot_partitions([(f"partition {title}", _read_csv(path / "partition.csv", ("client",)))],
                                           path / "partition.png"))
        return [p for p in written if p is not None]
    raise ConfigError(f"report {path}: neither a run directory (metrics.csv) nor a sweep directory (results.csv)")
