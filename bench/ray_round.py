"""`python main.py bench --ray-round [--quick] [--output FILE.json]`: the default run's round on Ray.

The default config (mnist1d, cnn1d, 16 clients on a ring, QG-DSGDm-N; Ray: one ClientActor of
8 clients per core on this machine) in one driver process, each configuration built and warmed
up, then timed in interleaved blocks of rounds (so the machine's other load hits them alike):

- local, 1 thread / all cores: the local engine (compute.torch_threads = 1, = the core count);
- ray: the Ray engine as configured (fused rounds: engine/fused.py);
- ray, a call a round: `ray.rounds_per_call=1` (payloads through the object store);
- ceiling, 1 thread / all cores: one model trained with SGD at batch 16 x 32 on those threads
  (bench/ceiling.py's Ceiling): the same samples per step with no decentralization.

A round's time is a block's wall time over its rounds (median over blocks); CPU ms/round is the
CPU time of this process and every process under it (Ray's actors, raylet, GCS) over the block.
Ratios: ray / local all cores (<= 1: Ray's round is no slower than one process using every
core) and ceiling all cores / ray (the two-core ceiling ratio).
"""
from __future__ import annotations

import os
import statistics
import time

# Changes to the default config for every configuration (none: the default run as it is).
OVERRIDES: tuple = ()
PLANS = {"full": {"warmup": 5, "blocks": 7, "seconds_per_block": 1.0},
         "quick": {"warmup": 3, "blocks": 3, "seconds_per_block": 0.3}}


def _tree_cpu() -> float:
    from bench import procs
    return procs.cpu_seconds([os.getpid(), *procs.descendants(os.getpid())])


def measure(plan: dict, overrides=()) -> list[dict]:
    """The records of every configuration; `overrides` (KEY=VALUE) change the default config
    of all of them (a test's tiny run)."""
    import torch

    from bench.ceiling import Ceiling
    from qgm_ray import build
    from qgm_ray.config import load_config
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.engine.ray_engine import RayEngine

    cores = os.cpu_count() or 1
    # The two Ray configurations live side by side, one stepping at a time: each reserves half
    # a core per actor (the default reserves one), so both fit where one would take every core.
    variants = {
        "local, 1 thread": ["backend=local"],
        "local, all cores": ["backend=local", f"compute.torch_threads={cores}"],
        "ray": ["ray.cpus_per_actor=0.5"],
        "ray, a call a round": ["ray.rounds_per_call=1", "ray.cpus_per_actor=0.5"],
    }
    cfgs = {name: load_config(None, ["progress=false", *overrides, *extra]) for name, extra in variants.items()}
    base = cfgs["local, 1 thread"]
    ds = build.build_dataset(base)
    parts = build.build_partition(base, ds)
    engines, done, fused_of = {}, {}, {}
    try:
        for name, cfg in cfgs.items():
            engines[name] = (RayEngine(cfg, ds, parts, log=lambda m: None) if cfg.backend == "ray"
                             else LocalEngine(cfg, ds, parts))
            if cfg.backend == "ray":   # whether its rounds run fused (engine/fused.py)
                fused_of[name] = engines[name]._info["fused"]
            done[name] = 0
        ceiling = Ceiling(base, ds)

        def engine_rounds(name):
            threads = cfgs[name].compute.torch_threads

            def rounds(r):
                torch.set_num_threads(threads)   # each local engine's own setting, as it sets it
                engines[name].train(range(done[name], done[name] + r), lambda t: 0.05)
                done[name] += r
            return rounds

        def ceiling_rounds(threads):
            def rounds(r):
                torch.set_num_threads(threads)
                for _ in range(r):
                    ceiling.step()
            return rounds

        steps = {**{name: engine_rounds(name) for name in engines},
                 "ceiling, 1 thread": ceiling_rounds(1), "ceiling, all cores": ceiling_rounds(cores)}
        for fn in steps.values():
            fn(plan["warmup"])
        per = {}
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn(3)
            per[name] = max(3, round(plan["seconds_per_block"] * 3 / max(time.perf_counter() - t0, 1e-6)))
        load = _load()
        wall: dict = {name: [] for name in steps}
        cpu: dict = {name: [] for name in steps}
        for _ in range(plan["blocks"]):
            for name, fn in steps.items():
                c0, t0 = _tree_cpu(), time.perf_counter()
                fn(per[name])
                wall[name].append((time.perf_counter() - t0) / per[name])
                cpu[name].append((_tree_cpu() - c0) / per[name])
        after = _load()
    finally:
        for engine in engines.values():
            engine.close()
    med = {name: statistics.median(v) for name, v in wall.items()}
    records = []
    for name in steps:
        records.append({"configuration": name, "fused": fused_of.get(name), "round_seconds": med[name],
                        "round_seconds_all": wall[name],
                        "cpu_seconds_per_round": statistics.median(cpu[name]), "rounds_per_block": per[name],
                        "torch_threads": cfgs[name].compute.torch_threads if name in cfgs else
                        (1 if name.endswith("1 thread") else cores),
                        "ray_over_local_all_cores": med[name] / med["local, all cores"],
                        "ceiling_ratio_all_cores": med["ceiling, all cores"] / med[name],
                        "load_1min": [load, after]})
    return records


def _load() -> float:
    from bench import procs
    return procs.load_avg()[0]


def markdown(records: list[dict], meta: dict) -> str:
    lines = [f"Default run's round ({meta['mode']}), {meta['date']} UTC, {meta['machine']}; {meta['versions']}.",
             "The default config (mnist1d, cnn1d, 16 clients, ring, QG-DSGDm-N), interleaved blocks of rounds in "
             f"one driver; load (1-minute average) before / after: {records[0]['load_1min'][0]:.1f} / "
             f"{records[0]['load_1min'][1]:.1f}.", "",
             "| configuration | round ms (median) | CPU ms / round | x local, all cores | all-cores ceiling / this |",
             "|---|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['configuration']} | {r['round_seconds'] * 1e3:.2f} | {r['cpu_seconds_per_round'] * 1e3:.1f} | "
                     f"{r['ray_over_local_all_cores']:.2f} | {r['ceiling_ratio_all_cores']:.2f} |")
    return "\n".join(lines) + "\n"


def main(quick: bool = False, output: str | None = None) -> int:
    from bench.reporting import metadata, report

    mode = "quick" if quick else "full"
    meta = {"mode": mode, **metadata()}
    records = measure(PLANS[mode], OVERRIDES)
    report(markdown(records, meta), meta, records, output)
    return 0

