"""Measure the Ray engine's performance levers one at a time, each against its baseline,
side by side (interleaved blocks, same harness as `bench.harness`).

    python -m bench.levers [--model cnn1d] [--n 16] [--levers threads,depth,vmap,coordinator]
                           [--output docs/results/bench/levers.json]

Levers that are config keys are set with `--set`-style overrides (compute.torch_threads,
ray.max_inflight_rounds, ray.clients_per_actor); the others are applied to the actor
processes by a Ray worker setup hook from `bench.patches` (a private Ray cluster per hook).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench import harness, procs
from bench.harness import Plan, Spec

PACKED, UNPACKED = "compute.pack_clients=true", "compute.pack_clients=false"


def lever_specs(lever: str, n: int) -> list[Spec]:
    half = max(1, n // 2)
    local = [Spec("local", n, "local"), Spec("local", n, "local 1 thread", threads=1)]
    if lever == "threads":
        return local + [
            Spec("ray", 1, "ray k=1, 1 thread/actor"),
            Spec("ray", 1, "ray k=1, 2 threads/actor", extra=("compute.torch_threads=2",)),
            Spec("ray", half, f"ray k={half}, 1 thread/actor"),
            Spec("ray", half, f"ray k={half}, 2 threads/actor", extra=("compute.torch_threads=2",)),
        ]
    if lever == "depth":
        return local + [Spec("ray", half, f"ray k={half}, inflight {d}", extra=(f"ray.max_inflight_rounds={d}",))
                        for d in (1, 2, 4)]
    if lever == "vmap":
        return local + [
            Spec("ray", half, f"ray k={half}", extra=(UNPACKED,)),
            Spec("ray", half, f"ray k={half} + vmap", extra=(PACKED,)),
            Spec("ray", n, f"ray k={n}", extra=(UNPACKED,)),
            Spec("ray", n, f"ray k={n} + vmap", extra=(PACKED,)),
        ]
    if lever == "k":  # actors per core: 1 actor per core (auto) against 2 and 4 per core
        ks = dict.fromkeys(max(1, n // d) for d in (2, 4, 8))
        return local + [Spec("ray", k, f"ray k={k}", extra=(UNPACKED,)) for k in ks] + [Spec("gloo", 1, "gloo")]
    if lever == "coordinator":
        return local + [
            Spec("ray", 1, "ray k=1"),
            Spec("ray", 1, "ray k=1, lean coordinator", hook="bench.patches.lean_coordinator"),
        ]
    if lever == "scale":  # hundreds of clients: one process per client is out of the question
        half = n // 2  # what ray.clients_per_actor: auto gives on 2 cores
        return local + [
            Spec("local", half, f"local packed k={half}", extra=(PACKED, f"ray.clients_per_actor={half}"), threads=1),
            Spec("ray", 32, "ray k=32", extra=(UNPACKED,)),
            Spec("ray", 32, "ray k=32 packed", extra=(PACKED,)),
            Spec("ray", half, f"ray k={half}", extra=(UNPACKED,)),
            Spec("ray", half, f"ray k={half} packed (auto)", extra=(PACKED,)),
            Spec("ray", half, f"ray k={half} packed + lean coordinator", extra=(PACKED,),
                 hook="bench.patches.lean_coordinator"),
        ]
    if lever == "best":
        return local + [
            Spec("ray", 1, "ray k=1"),
            Spec("ray", half, f"ray k={half}", extra=(UNPACKED,)),
            Spec("ray", half, f"ray k={half} + vmap + lean", extra=(PACKED,), hook="bench.patches.lean_coordinator"),
            Spec("gloo", 1, "gloo"),
        ]
    raise SystemExit(f"unknown lever {lever!r}")


def render(records: list[dict]) -> str:
    """Markdown: one row per configuration, grouped by lever."""
    lines = ["| lever | model | n | configuration | round ms (median) | × local floor | CPU ms / round "
             "| PSS MB | load 1m |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in records:
        med, cpu = r.get("round_seconds_median"), r.get("cpu_seconds_per_round")
        lines.append(f"| {r.get('lever', '')} | {r['model']} | {r['n_clients']} | {r['label']} | "
                     f"{med * 1e3:.1f} | {r['ratio_to_local']:.2f} | {cpu * 1e3:.1f} | {r.get('pss_mb', 0):.0f} | "
                     f"{r.get('load_avg_1m')} |" if med else
                     f"| {r.get('lever', '')} | {r['model']} | {r['n_clients']} | {r['label']} | — | — | — | — | "
                     f"{r['status']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn1d", choices=sorted(harness.MODELS))
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--levers", default="threads,depth,vmap,coordinator")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=None, help="rounds per block")
    ap.add_argument("--output", default=None)
    ap.add_argument("--render", nargs="+", default=None, help="print the Markdown table of these JSON files")
    args = ap.parse_args(argv)
    if args.render:
        print(render([r for f in args.render for r in json.loads(Path(f).read_text())]))
        return 0
    rounds = args.rounds or {"cnn1d": 20, "resnet20": 4}[args.model]
    plan = Plan(ns=(args.n,), models=(args.model,), warmup={args.model: 3 if args.model == "cnn1d" else 2},
                blocks=args.blocks, block_rounds={args.model: rounds}, discard=1)
    t0 = time.monotonic()
    out = []
    for lever in args.levers.split(","):
        bench = harness.Bench(plan, log=lambda s: print(f"[{time.monotonic() - t0:6.1f}s] {s}", flush=True))
        print(f"lever {lever}: {args.model} n={args.n} (load {procs.load_avg()})", flush=True)
        recs = bench.run(specs_of=lambda model, n, lever=lever: lever_specs(lever, n))
        for r in recs:
            r["lever"] = lever
        out += recs
        for r in recs:
            med = r["round_seconds_median"]
            print(f"    {r['label']:<34} {med * 1e3 if med else float('nan'):9.1f} ms  "
                  f"x local {r['ratio_to_local']}  cpu/round {r.get('cpu_seconds_per_round')} "
                  f"(+ray sys {r.get('ray_system_cpu_seconds_per_round')})  PSS {r.get('pss_mb')} MB  "
                  f"load {r.get('load_avg_1m')}  {r['status']}",
                  flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n")
    print(render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
