"""`python main.py bench --scale [--quick] [--output DIR]`: many clients on one machine.

Every measurement runs in a fresh process (`python -m bench.scale --one SPEC`), so its memory is
its own; this process samples that process tree meanwhile (bench/memwatch.py: peak PSS, split
by role: driver, ClientActor, Coordinator, Ray system). A measurement records:

- data_seconds: the synthetic dataset and its iid partition (64 training samples per client,
  mnist1d-shaped: 40 features, 10 classes; synthetic so that 16,384 clients need no 20-minute
  mnist1d generation);
- startup_seconds: the engine built (Ray started, actors up, blocks built);
- round_seconds: mean wall time of one round over `rounds` rounds after one warm-up round
  (one `train` call, which ends with every client's round finished);
- eval_seconds, checkpoint_seconds / checkpoint_mb: one evaluation, one state_dict written to a
  file with torch.save (as the runner writes its checkpoints);
- ceiling (kind "ceiling"): one model trained with SGD at batch n x b on the same thread(s)
  (bench/gpu.py's time_ceiling on the CPU); ceiling ratio = ceiling round / engine round.

Records go to DIR/scale.json and DIR/scale.md with the machine, date and load (1-minute load
average before and after each measurement: the machine is shared).
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

PER_CLIENT = 64          # training samples per client
BATCH = 32

# (kind, backend, n, model, algorithm, topology, rounds)
FULL = [
    *[("ceiling", "local", n, "cnn1d", "qg_dsgdm_n", "ring", 3) for n in (16, 256, 1024, 4096)],
    *[("round", b, n, "cnn1d", "qg_dsgdm_n", "ring", 3) for n in (16, 256) for b in ("local", "ray")],
    *[("round", b, n, m, "qg_dsgdm_n", "ring", 3) for n in (1024, 4096) for m in ("cnn1d", "mlp")
      for b in ("local", "ray")],
    *[("round", b, 1024, "cnn1d", a, "ring", 3) for a in ("dsgdm_n", "centralized_sgdm") for b in ("local", "ray")],
    *[("round", b, 16384, "cnn1d", "qg_dsgdm_n", "ring", 2) for b in ("ray", "local")],
]
QUICK = [
    ("ceiling", "local", 256, "cnn1d", "qg_dsgdm_n", "ring", 2),
    *[("round", b, 256, "cnn1d", a, "ring", 2) for a in ("dsgdm_n", "centralized_sgdm") for b in ("local", "ray")],
]


def config(backend: str, n: int, model: str, algorithm: str, topology: str):
    from qgm_ray.config import load_config

    return load_config(None, [
        "data.name=synthetic", f"data.options={{num_samples: {n * PER_CLIENT * 5 // 4}, num_features: 40, "
        f"num_classes: 10}}", "data.partition=iid", f"data.batch_size={BATCH}", f"model.name={model}",
        f"topology.name={topology}", f"topology.n_clients={n}", f"algorithm.name={algorithm}",
        f"backend={backend}", "progress=false", "device=cpu"])


def measure(spec: dict) -> dict:
    """One measurement, in this process (what `--one` runs)."""
    import tempfile

    import torch

    from qgm_ray import build

    out = dict(spec)
    cfg = config(spec["backend"], spec["n"], spec["model"], spec["algorithm"], spec["topology"])
    t0 = time.perf_counter()
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    out["data_seconds"] = round(time.perf_counter() - t0, 2)
    if spec["kind"] == "ceiling":
        from bench.gpu import time_ceiling
        torch.set_num_threads(cfg.compute.torch_threads)
        out["round_seconds"] = time_ceiling(cfg, "cpu", 1, spec["rounds"])["round_seconds"]
        return out
    t0 = time.perf_counter()
    if spec["backend"] == "ray":
        from qgm_ray.engine.ray_engine import RayEngine
        engine = RayEngine(cfg, ds, parts, log=lambda m: None)
        out["actors"], out["clients_per_actor"] = engine._info["n_actors"], engine.cfg.ray.clients_per_actor
    else:
        from qgm_ray.engine.local import LocalEngine
        engine = LocalEngine(cfg, ds, parts)
        out["actors"], out["clients_per_actor"] = len(engine.blocks), engine.k
    out["startup_seconds"] = round(time.perf_counter() - t0, 2)
    try:
        engine.train(range(1), lambda t: 0.05)
        t0 = time.perf_counter()
        losses = engine.train(range(1, 1 + spec["rounds"]), lambda t: 0.05)
        out["round_seconds"] = (time.perf_counter() - t0) / spec["rounds"]
        out["loss"] = losses[-1].loss
        t0 = time.perf_counter()
        engine.evaluate()
        out["eval_seconds"] = round(time.perf_counter() - t0, 2)
        # Into a file, as the runner writes its checkpoints (CheckpointStore.save): torch.save
        # streams to a file, where a BytesIO would hold a second copy of the state in memory.
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            state = engine.state_dict()
            path = Path(tmp) / "checkpoint.pt"
            with open(path, "wb") as f:
                torch.save(state, f)
            out["checkpoint_seconds"] = round(time.perf_counter() - t0, 2)
            out["checkpoint_mb"] = round(path.stat().st_size / 2**20, 1)
            del state
    finally:
        engine.close()
    return out


def run_one(spec: dict, timeout: float) -> dict:
    """`measure` in a fresh process; its tree's peak PSS sampled meanwhile."""
    from bench import memwatch, procs

    load = procs.load_avg()[0]
    proc = subprocess.Popen([sys.executable, "-m", "bench.scale", "--one", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem: dict = {}
    watcher = threading.Thread(target=lambda: mem.update(memwatch.watch(proc.pid, every=0.5)), daemon=True)
    watcher.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        return {**spec, "error": f"timed out after {timeout:.0f}s", "load_1min": [load, procs.load_avg()[0]]}
    watcher.join(5)
    lines = [x for x in stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": (stderr.strip().splitlines() or ["?"])[-1][:300]}
    rec = json.loads(lines[-1])
    rec["peak_pss_mb"] = mem.get("pss_mb")
    rec["pss_by_role_mb"] = merge_roles({r: v["pss_mb"] for r, v in (mem.get("by_role") or {}).items()})
    rec["load_1min"] = [load, procs.load_avg()[0]]
    return rec


def merge_roles(by_role: dict) -> dict:
    """One entry per role: a Ray worker's title names its current call (`ray::NodeClientActor.step`
    while it steps, `ray::NodeClientActor` between calls), so memwatch's roles split by moment."""
    out: dict = {}
    for r, v in by_role.items():
        key = r.split(".")[0].replace("ray::NodeClientActor", "ClientActor").replace("ray::", "")
        out[key] = round(out.get(key, 0.0) + v, 1)
    return out


def ceiling_ratios(records: list[dict]) -> list[dict]:
    """ceiling round / engine round per (n, model, backend), where both were measured."""
    ceil = {(r["n"], r["model"]): r["round_seconds"] for r in records if r["kind"] == "ceiling" and "error" not in r}
    return [{"n": r["n"], "model": r["model"], "backend": r["backend"],
             "ratio": round(ceil[(r["n"], r["model"])] / r["round_seconds"], 3)}
            for r in records if r["kind"] == "round" and r["algorithm"] == "qg_dsgdm_n" and "error" not in r
            and (r["n"], r["model"]) in ceil]


def markdown(records: list[dict], meta: dict) -> str:
    lines = [f"Scale bench ({meta['mode']}), {meta['date']} UTC, {meta['machine']}; {meta['versions']}.",
             f"Synthetic iid data, {PER_CLIENT} training samples per client, batch {BATCH}; defaults otherwise "
             f"(ray.clients_per_actor auto, ray.cpus_per_actor auto, 1 torch thread). Load: 1-minute load average "
             f"before / after each measurement (2 cores, shared).", "",
             "| kind | backend | n | model | algorithm | actors x k | start-up s | round s | eval s | "
             "checkpoint s / MB | peak PSS MB (by role) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['backend']} | {r['n']} | {r['model']} | {r['algorithm']} | "
                         f"failed: {r['error']} | | | | | | {r.get('load_1min', '')} |")
            continue
        roles = ", ".join(f"{k} {v:.0f}" for k, v in sorted(merge_roles(r.get("pss_by_role_mb") or {}).items()))
        ck = f"{r['checkpoint_seconds']} / {r['checkpoint_mb']}" if "checkpoint_mb" in r else ""
        lines.append(f"| {r['kind']} | {r['backend']} | {r['n']} | {r['model']} | {r['algorithm']} | "
                     f"{r.get('actors', '')} x {r.get('clients_per_actor', '')} | {r.get('startup_seconds', '')} | "
                     f"{r['round_seconds']:.3f} | {r.get('eval_seconds', '')} | {ck} | "
                     f"{r.get('peak_pss_mb') or 0:.0f} ({roles}) | {r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f} |")
    ratios = ceiling_ratios(records)
    if ratios:
        lines += ["", "CPU ceiling ratio (one model at batch n x b, same thread count / one engine round; 1 = "
                  "the engine is as fast as training one big-batch model):", "",
                  "| n | model | backend | ratio |", "|---|---|---|---|"]
        lines += [f"| {x['n']} | {x['model']} | {x['backend']} | {x['ratio']} |" for x in ratios]
    return "\n".join(lines) + "\n"


def main(quick: bool = False, output: str | None = None, only: list | None = None) -> int:
    from bench.reporting import metadata

    plan = QUICK if quick else FULL
    specs = [dict(zip(("kind", "backend", "n", "model", "algorithm", "topology", "rounds"), p)) for p in plan]
    if only:
        specs = [s for s in specs if s["n"] in only]
    meta = {"mode": "quick" if quick else "full", **metadata()}
    out_dir = Path(output or "docs/results/scale")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "scale-quick" if quick else "scale"
    path = out_dir / f"{name}.json"
    records: list = []
    for spec in specs:
        t0 = time.monotonic()
        rec = run_one(spec, timeout=3600)
        records.append(rec)
        shown = rec.get("error") or f"round {rec['round_seconds']:.3f}s, peak PSS {rec.get('peak_pss_mb')} MB"
        print(f"{spec['kind']} {spec['backend']} n={spec['n']} {spec['model']} {spec['algorithm']}: {shown} "
              f"({time.monotonic() - t0:.0f}s)", flush=True)
        # written after every measurement: a long run that is stopped keeps what it measured
        path.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")
        (out_dir / f"{name}.md").write_text(markdown(records, meta))
    print()
    print(markdown(records, meta))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(measure(json.loads(sys.argv[2]))), flush=True)
    else:
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("--quick", action="store_true")
        ap.add_argument("--output", default=None)
        ap.add_argument("--only", type=int, nargs="*", help="only these client counts")
        a = ap.parse_args()
        sys.exit(main(a.quick, a.output, a.only))
