"""`python -m bench.tune_overhead [--trials 4] [--epochs 2] [--output FILE.json]`: what a Ray
Tune sweep of the default config on Ray costs beyond its trials' training.

Each sweep runs its trials one at a time (`tune.max_concurrent_trials: 1`), so its overhead is
its wall time minus the sum of its trials' training seconds (`wall_seconds` in each summary:
from the first round to the end, Ray and actor start excluded): Ray's start, Tune's
bookkeeping, every trial process and its coordinator and ClientActors (torch imports), the
evaluations and checkpoints. Two sweeps side by side, in one process and one Ray instance
each: trial processes and actors kept from one trial to the next (what `tune` does), and new
ones for every trial (Tune's `reuse_actors: false`). Prints one JSON record with the 1-minute
load average before and after (the machine may be shared)."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def sweep_seconds(trials: int, epochs: int, reuse: bool, out: Path) -> dict:
    import ray

    from qgm_ray import tune as qtune
    from qgm_ray.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml", [
        "backend=ray", f"schedule.epochs={epochs}", f"eval.every_epochs={epochs}", "progress=false",
        f"tune.grid={{seed: {list(range(trials))}}}", "tune.scheduler=fifo", "tune.max_concurrent_trials=1"])
    make = qtune._tune_config
    if not reuse:   # Tune's own switch: every trial a new process, so new actors too
        qtune._tune_config = lambda c: _without_reuse(make(c))
    try:
        t0 = time.perf_counter()
        result = qtune.run_sweep(cfg, out, log=lambda m: None)
        wall = time.perf_counter() - t0
    finally:
        qtune._tune_config = make
        if ray.is_initialized():
            ray.shutdown()
    training = float(result["results"]["wall_seconds"].sum())
    return {"reuse": reuse, "trials": trials, "sweep_seconds": wall, "training_seconds": training,
            "overhead_seconds": wall - training, "statuses": sorted(set(result["results"]["status"]))}


def _without_reuse(tune_config):
    tune_config.reuse_actors = False
    return tune_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2, help="of the default config's 40, per trial")
    ap.add_argument("--output", default=None, help="write the record as JSON here")
    args = ap.parse_args()
    load = [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for reuse in (True, False):
            rows.append(sweep_seconds(args.trials, args.epochs, reuse, Path(tmp) / f"reuse_{reuse}"))
            print(json.dumps(rows[-1]), flush=True)
    load.append(os.getloadavg()[0])
    record = {"bench": "tune_overhead", "epochs": args.epochs, "rows": rows, "load_1min": load,
              "overhead_ratio_new_over_kept": rows[1]["overhead_seconds"] / rows[0]["overhead_seconds"]}
    print(json.dumps(record))
    if args.output:
        Path(args.output).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
