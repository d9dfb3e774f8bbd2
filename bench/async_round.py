"""`python -m bench.async_round [--n 1024] [--model mlp] [--rows 3] [--backend local|ray]`: the
wall time of one asynchronous metrics row (n local steps in all: engine/async_run.py, on Ray
engine/async_ray.py) against one synchronous round (n local steps too), on one engine, same
clients, data and rule; the clock with
heterogeneous speeds and stragglers, so a row takes several waves. Prints one JSON record with
the 1-minute load average before and after (the machine may be shared)."""
from __future__ import annotations

import argparse
import json
import os
import time

CLOCK = ["clock.speed.sigma=0.5", "clock.stragglers.fraction=0.1", "clock.stragglers.slowdown=5"]


def seconds_per_row(mode: str, algorithm: str, n: int, model: str, rows: int,
                    backend: str = "local") -> tuple[float, float]:
    from bench.scale import BATCH, PER_CLIENT
    from qgm_ray.config import load_config
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.runner import run as runner

    # bench/scale.py's many-client run (synthetic mnist1d-shaped data, iid), on the clock; epochs
    # of at least one row each, enough for the warm-up row and the rows timed.
    cfg = load_config(None, [
        "data.name=synthetic", f"data.options={{num_samples: {n * PER_CLIENT * 5 // 4}, num_features: 40, "
        f"num_classes: 10}}", "data.partition=iid", f"data.batch_size={BATCH}", f"model.name={model}",
        "topology.name=ring", f"topology.n_clients={n}", f"algorithm.name={algorithm}", f"backend={backend}",
        "progress=false", "device=cpu", f"schedule.epochs={max(2, rows + 1)}", f"clock.mode={mode}", *CLOCK])
    ds, parts = runner.prepare(cfg, log=lambda m: None)
    if backend == "ray":
        from qgm_ray.engine.ray_engine import RayEngine
        engine = RayEngine(cfg, ds, parts, log=lambda m: None)
    else:
        engine = LocalEngine(cfg, ds, parts)
    try:
        engine.train(range(0, 1), lambda r: 0.05)   # warm-up (and an async run's step-0 gradients)
        t = time.perf_counter()
        engine.train(range(1, 1 + rows), lambda r: 0.05)
        per_row = (time.perf_counter() - t) / rows
    finally:
        engine.close()
    schedule = engine.exchange.schedule
    waves = sum(len(schedule.waves(r)) for r in range(1, 1 + rows)) / rows if schedule is not None else 1.0
    return per_row, waves


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--rows", type=int, default=3)
    ap.add_argument("--backend", choices=("local", "ray"), default="local")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    out = {"n_clients": a.n, "model": a.model, "rows": a.rows, "backend": a.backend, "clock": CLOCK}
    for name, mode, algo in (("sync", "sync", "qg_dsgdm_n"), ("async", "async", "qg_dsgdm_n"),
                             ("ad_psgd", "async", "ad_psgd")):
        out[f"{name}_seconds_per_row"], out[f"{name}_waves_per_row"] = seconds_per_row(mode, algo, a.n, a.model,
                                                                                       a.rows, a.backend)
    out["async_over_sync"] = out["async_seconds_per_row"] / out["sync_seconds_per_row"]
    out["ad_psgd_over_sync"] = out["ad_psgd_seconds_per_row"] / out["sync_seconds_per_row"]
    out["load_1min"] = [load0, os.getloadavg()[0]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
