"""`python docs/results/async/compare.py`: the synchronous and asynchronous sweeps of this folder
side by side (compare.md): final accuracy, the simulated time a run takes, and the simulated time
to reach fixed test accuracies, per topology and rule; then the control runs (control/: one
seed, no stragglers, every client at speed 1). Reads only the sweeps' results.csv and
histories.csv and the control runs' metrics.csv."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
TARGETS = (0.5, 0.6, 0.7, 0.8)


def first_reach(h: pd.DataFrame, target: float) -> float:
    hit = h[h["test_accuracy"] >= target]
    return float(hit["sim_seconds"].iloc[0]) if len(hit) else float("nan")


def runs() -> pd.DataFrame:
    rows = []
    for mode in ("sync", "async"):
        res = pd.read_csv(HERE / mode / "results.csv")
        hist = pd.read_csv(HERE / mode / "histories.csv")
        for _, r in res.iterrows():
            h = hist[hist["trial"] == r["trial"]].sort_values("round")
            stale = h["staleness_mean"].mean() if "staleness_mean" in h and h["staleness_mean"].notna().any() else None
            rows.append({"topology": f"{r['topology']} n={r['n_clients']}", "mode": mode, "rule": r["algorithm"],
                         "seed": r["seed"], "final": r["final_test_accuracy"],
                         "sim_end": float(h["sim_seconds"].iloc[-1]), "staleness": stale,
                         **{f"t{int(100 * t)}": first_reach(h, t) for t in TARGETS}})
    return pd.DataFrame(rows)


def fmt_time(values: pd.Series) -> str:
    reached = values.dropna()
    if reached.empty:
        return "not reached"
    text = f"{reached.mean():.0f} s"
    return text if len(reached) == len(values) else f"{text} [{len(reached)}/{len(values)}]"


def table(df: pd.DataFrame) -> list[str]:
    head = ("| mode | rule | final accuracy (%) | simulated time of the run | "
            + " | ".join(f"time to {int(100 * t)}%" for t in TARGETS) + " | mean staleness |")
    lines = []
    for topo, g in df.groupby("topology", sort=False):
        lines += [f"## {topo}", "", head, "|" + "---|" * (5 + len(TARGETS))]
        for (mode, rule), c in g.groupby(["mode", "rule"], sort=False):
            stale = c["staleness"].dropna()
            times = " | ".join(fmt_time(c[f"t{int(100 * t)}"]) for t in TARGETS)
            lines.append(f"| {mode} | {rule} | {100 * c['final'].mean():.2f} ± {100 * c['final'].std():.2f} | "
                         f"{c['sim_end'].mean():.0f} s | {times} | "
                         f"{f'{stale.mean():.2f}' if len(stale) else '-'} |")
        lines.append("")
    return lines


def controls() -> list[str]:
    lines = ["## Control: asynchronous gossip with no stragglers (ring n=16, seed 0, one run each)", "",
             "| rule | final accuracy (%) | simulated time of the run | mean staleness |", "|---|---|---|---|"]
    for d in sorted((HERE / "control").iterdir()):
        m = pd.read_csv(d / "metrics.csv")
        s = json.loads((d / "summary.json").read_text())
        lines.append(f"| {d.name.removeprefix('uniform_')} | {100 * s['final_test_accuracy']:.2f} | "
                     f"{m['sim_seconds'].iloc[-1]:.0f} s | {m['staleness_mean'].dropna().mean():.2f} |")
    return lines + [""]


def main() -> None:
    df = runs()
    lines = ["# Synchronous and asynchronous runs side by side", "",
             "Mean ± sample std over 3 seeds (final accuracy); times are means over the seeds that reach "
             "the accuracy ([k/3] when not all do). Written by compare.py from sync/ and async/.", ""]
    lines += table(df) + controls()
    (HERE / "compare.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
