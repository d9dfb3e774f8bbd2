"""The report's PNG figures: matplotlib Figure objects written straight to PNG (no display, no
pyplot state), and for the figures of accuracy against bytes their numbers as a CSV beside
them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from qgm_ray.report.cells import _ordered, best_trials, cell_stats, row_labels, split_keys, variant_keys
from qgm_ray.report.results import _column

PNG_DPI = 120
PLOTTED = ("epoch", "lr", "train_loss", "test_accuracy", "consensus_distance")   # metrics.csv columns a run's curves draw


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


def _labelled(df: pd.DataFrame, histories: pd.DataFrame, param_keys=()) -> pd.DataFrame:
    """The histories of `best_trials`, each row with its trial's row label (`label`), that label
    followed by the trial's section values (`series`), its sections, alpha and status."""
    sel = best_trials(df, param_keys)
    sections, _ = split_keys(param_keys)
    sec_cols = [_column(k) for k in sections]
    labels = row_labels(sel, param_keys)
    sel = sel.assign(label=labels, series=[" ".join([lab] + [str(r[c]) for c in sec_cols])
                                           for lab, (_, r) in zip(labels, sel.iterrows())])
    cols = ["trial", "algorithm", "label", "series", "alpha", "status"] + sec_cols
    # A section's value is the trial's: metrics.csv's n_clients is the client count at each row.
    own = histories.drop(columns=[c for c in cols[1:] if c in histories.columns])
    return own.merge(sel[cols], on="trial")


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
    """Test accuracy against simulated time (metrics.csv's sim_seconds, qgm_ray/clock/); None
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

