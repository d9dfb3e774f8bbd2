"""`python main.py bench --startup [--quick] [--output FILE.json]`: how long the default run
takes to reach its first round, phase by phase.

The default config (`python main.py`, nothing set but a short schedule: SCHEDULE) runs as a
fresh `python main.py` process, as a user starts it, REPEATS times on each engine (Ray, then
`backend=local`, alternating, so background load on a shared machine hits both alike). Each
run writes its phase times (seconds since its process started) into summary.json's `startup`
(qgm_ray/runner/startup.py); the bench adds `exit`, when the process ended, measured from
its own clock around the process. The table holds each phase's median over the repeats;
the record also keeps every run's times and the 1-minute load average before and after.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qgm_ray.runner.startup import PHASES

REPO = Path(__file__).resolve().parent.parent
# A few rounds of the default run: 0.1 of an epoch of 32 rounds (3 rounds), evaluated once at the end.
SCHEDULE = ("schedule.epochs=0.1", "progress=false")
BACKENDS = ("ray", "local")
COLUMNS = (*PHASES, "exit")
REPEATS = {"full": 5, "quick": 2}


def one_run(backend: str, out: Path, repo: Path = REPO) -> dict:
    """Run the default config once in a fresh process of the checkout `repo` (another one: an
    A/B of two versions): {phase: seconds since it started}."""
    args = [sys.executable, str(repo / "main.py"), *(a for s in SCHEDULE for a in ("--set", s)),
            "--set", f"backend={backend}", "--output-dir", str(out)]
    t0 = time.time()
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    # exit: on this process's clock, from starting the child (which the child's own start
    # follows by a fork and an exec, milliseconds) to its end.
    return {**summary["startup"], "exit": round(ended - t0, 3)}


def medians(runs: list[dict]) -> dict:
    """{column: median seconds over the runs that reached it}, in COLUMNS order."""
    out = {}
    for col in COLUMNS:
        values = [r[col] for r in runs if col in r]
        if values:
            out[col] = round(statistics.median(values), 2)
    return out


def table(rows: dict, repeats: int, load: list) -> str:
    """Markdown: one row per backend, one column per phase (median seconds since process start)."""
    head = "| backend | " + " | ".join(COLUMNS) + " |"
    lines = [f"Median seconds from process start, {repeats} fresh `python main.py --set "
             f"{' --set '.join(SCHEDULE)}` each (1-min load {load[0]:.2f} -> {load[1]:.2f}).", "",
             head, "|" + "---|" * (len(COLUMNS) + 1)]
    for backend, med in rows.items():
        lines.append(f"| {backend} | " + " | ".join(f"{med[c]:.2f}" if c in med else "-" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(quick: bool = False, output: str | None = None) -> int:
    from bench.reporting import metadata, report

    repeats = REPEATS["quick" if quick else "full"]
    load = [os.getloadavg()[0]]
    runs: dict[str, list[dict]] = {b: [] for b in BACKENDS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for backend in BACKENDS:
                runs[backend].append(one_run(backend, Path(tmp) / f"{backend}-{i}"))
                print(f"{backend} #{i + 1}: {json.dumps(runs[backend][-1])}", flush=True)
    load.append(os.getloadavg()[0])
    rows = {b: medians(r) for b, r in runs.items()}
    meta = {**metadata(), "bench": "startup", "schedule": list(SCHEDULE), "repeats": repeats, "load_1min": load}
    records = [{"backend": b, "median": rows[b], "runs": runs[b]} for b in BACKENDS]
    report(table(rows, repeats, load), meta, records, output)
    return 0
