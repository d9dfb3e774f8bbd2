"""`python main.py bench [--quick] [--output FILE.json]`: round time and memory of every backend.

For each model and client count n, the backends run side by side: all are built, warmed up,
then measured in interleaved blocks of rounds (local, ray k=1, ray k=n/2, gloo, then the next
block in rotated order), so background load on a shared machine hits them alike. A round's
time is the gap between consecutive round ends (a pipelined engine is timed by throughput);
the first rounds of every block are discarded; the record holds the median and p90.

Records (docs/design.md, "Run outputs"): backend, n_clients, clients_per_actor, model,
round_seconds_median, peak_rss_mb; plus dataset, p90, rounds measured, ratios to local and
gloo, pss_mb, processes, torch threads, load average, status. Next to FILE.json go FILE.md (the table) and FILE.png.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
# Every benchmark's metadata and report are bench/reporting.py's; importable from here as they were.
from bench.reporting import metadata, report

__all__ = ["BACKENDS", "MB_PER_PROCESS", "MODELS", "PLANS", "REPO", "SCHEMA", "Bench", "Plan", "Spec", "backend_specs",
           "config_dict", "finalize", "groups", "main", "markdown", "merge", "metadata", "plot", "report",
           "validate_records", "write"]

REPO = Path(__file__).resolve().parent.parent
MB_PER_PROCESS = 450  # rough resident cost of one torch process here (import torch alone: ~290 MB anon)

MODELS = {
    # model -> (dataset, dataset options as a function of n)
    # mnist1d's default 4000 training samples feed up to ~64 clients with batch 32; more
    # clients get a larger generated set (cached under data/ after the first run).
    "cnn1d": ("mnist1d", lambda n: {} if n <= 64 else {"num_samples": max(40000, 160 * n)}),
    # CIFAR-shaped synthetic images; enough samples that every client holds >= 2 batches of 32.
    "resnet20": ("synthetic_image", lambda n: {"num_samples": max(1000, 80 * n)}),
}

SCHEMA = {
    "backend": str, "n_clients": int, "clients_per_actor": int, "model": str,
    "round_seconds_median": (float, type(None)), "peak_rss_mb": (float, type(None)),
}
BACKENDS = ("local", "ray", "gloo")


@dataclass
class Plan:
    ns: tuple
    models: tuple
    warmup: dict        # model -> rounds before measuring (actors start, caches fill)
    blocks: int         # measured blocks per backend
    block_rounds: dict  # model -> rounds per block
    discard: int        # rounds discarded at the start of every block
    ray: bool = True
    gloo: bool = True
    ray_one_per_actor: bool = True  # also ray with clients_per_actor=1 (besides n/2)
    packed_models: tuple = ("cnn1d",)  # also ray k=n/2 with compute.pack_clients=true (vmap)


PLANS = {
    "full": Plan(ns=(4, 8, 16, 32), models=("cnn1d", "resnet20"), warmup={"cnn1d": 5, "resnet20": 2},
                 blocks=3, block_rounds={"cnn1d": 20, "resnet20": 4}, discard=1),
    "quick": Plan(ns=(4, 8), models=("cnn1d", "resnet20"), warmup={"cnn1d": 3, "resnet20": 1},
                  blocks=2, block_rounds={"cnn1d": 8, "resnet20": 3}, discard=1),
    # For tests: every backend and layout of the quick plan, at n = 4 with the fewest rounds
    # that still give a median, on cnn1d (the only model the quick plan also packs); a model is
    # data to the harness (MODELS), so a second one would repeat every process start for no path.
    "smoke": Plan(ns=(4,), models=("cnn1d",), warmup={"cnn1d": 1}, blocks=2, block_rounds={"cnn1d": 3}, discard=1),
}


def config_dict(model: str, n: int, backend: str, clients_per_actor: int = 1, extra: list | None = None) -> dict:
    from qgm_ray.config import config_dict as _config_dict

    dataset, opts = MODELS[model]
    d = _config_dict(None, [
        f"model.name={model}", f"data.name={dataset}", f"topology.n_clients={n}", "topology.name=ring",
        "data.partition=iid", "data.batch_size=32", "algorithm.name=qg_dsgdm_n", "algorithm.lr=0.05",
        f"backend={'ray' if backend == 'ray' else 'local'}", f"ray.clients_per_actor={clients_per_actor}",
        "compute.torch_threads=1", "progress=false", "device=cpu",
        # The floor is the plain per-client loop; `auto` would vmap-pack the local engine's
        # clients in blocks of k = n too (a "local packed" spec can still ask for it).
        *(["compute.pack_clients=false"] if backend == "local" else []), *(extra or [])])
    d["data"]["root"] = str(REPO / "data")
    d["data"]["options"] = opts(n)
    return d


@dataclass(frozen=True)
class Spec:
    """One benchmarked configuration."""
    backend: str                  # local | ray | gloo
    clients_per_actor: int
    label: str
    extra: tuple = ()             # more `--set` overrides (e.g. ray.max_inflight_rounds=4)
    hook: str | None = None       # ray: worker setup hook from bench.patches (own Ray cluster)
    threads: int | None = None    # torch threads per process (local default: all cores; others 1)

    def n_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        return (os.cpu_count() or 1) if self.backend == "local" else 1


def backend_specs(model: str, n: int, plan: Plan) -> list[Spec]:
    cores = os.cpu_count() or 1
    specs = [Spec("local", n, "local")]
    if cores > 1:
        # The floor is the faster of the two; with other jobs on the cores, a multi-threaded
        # process can lose badly to one-threaded ones (OpenMP threads wait for each other).
        specs.append(Spec("local", n, "local 1 thread", threads=1))
    if plan.ray:
        half = max(1, n // 2)
        ks = [1, half] if plan.ray_one_per_actor else [half]
        # Unpacked rows say so explicitly: `compute.pack_clients: auto` would pack k >= 8 clients.
        specs += [Spec("ray", k, f"ray k={k}", extra=("compute.pack_clients=false",)) for k in dict.fromkeys(ks)]
        if model in plan.packed_models and half > 1:
            specs.append(Spec("ray", half, f"ray k={half} packed", extra=("compute.pack_clients=true",)))
    if plan.gloo:
        specs.append(Spec("gloo", 1, "gloo"))
    return specs


def _processes(s: Spec, n: int) -> int:
    if s.backend == "local":
        return 1
    if s.backend == "gloo":
        return n
    return -(-n // s.clients_per_actor) + 2  # actors + coordinator + evaluator


def groups(n: int, specs: list, budget_mb: float) -> list[list]:
    """Split the backends of one n into groups that fit in memory together; the local ones
    are in every group (the side-by-side reference), the others packed greedily, biggest first."""
    local = [s for s in specs if s.backend == "local"]
    others = sorted([s for s in specs if s.backend != "local"], key=lambda s: -_processes(s, n))
    out: list[list] = []
    for s in others:
        cost = _processes(s, n) * MB_PER_PROCESS
        for g in out:
            if sum(_processes(o, n) for o in g) * MB_PER_PROCESS + cost <= budget_mb:
                g.append(s)
                break
        else:
            out.append([s])
    if not out:
        return [local]
    # Every group gets the 1-thread local run as its side-by-side floor; the all-cores local
    # run (often far slower on a shared machine) only the first.
    single = [s for s in local if s.n_threads() == 1] or local
    return [(local if i == 0 else single) + g for i, g in enumerate(out)]


def _median_p90(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    s = sorted(xs)
    return statistics.median(s), s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


class Bench:
    def __init__(self, plan: Plan, log=print):
        self.plan, self.log = plan, log
        self.ray_servers: dict = {}
        self.ray_error = None

    # -- backends
    def _ray(self, hook: str | None):
        from bench.servers import EngineServer

        if hook not in self.ray_servers and self.ray_error is None:
            try:
                import importlib.util
                if importlib.util.find_spec("qgm_ray.engine.ray_engine") is None:
                    raise ImportError("qgm_ray.engine.ray_engine is not there yet")
                init = {"address": "local", "num_cpus": 1024, "include_dashboard": False,
                        "log_to_driver": False, "configure_logging": False}
                if hook:
                    init["runtime_env"] = {"worker_process_setup_hook": hook}
                self.ray_servers[hook] = EngineServer("ray", threads=1, ray_init=init)
            except Exception as e:  # noqa: BLE001
                self.ray_error = f"{type(e).__name__}: {e}"
        if hook not in self.ray_servers:
            raise RuntimeError(f"ray backend unavailable: {self.ray_error}")
        return self.ray_servers[hook]

    def _open(self, spec: Spec, model: str, n: int, key: str):
        from bench.servers import EngineServer, GlooBackend, ServerBackend

        cfg = config_dict(model, n, spec.backend, spec.clients_per_actor, list(spec.extra))
        if spec.backend == "local":
            # A process per group, so that its peak RSS is this engine's alone.
            server = EngineServer("local", threads=spec.n_threads())
            b = ServerBackend(server, key, cfg)
            b.own_server = server
            return b
        if spec.backend == "ray":
            server = self._ray(spec.hook)
            server.call("reset_peak", "")
            return ServerBackend(server, key, cfg)
        return GlooBackend(cfg, threads=spec.n_threads())

    def _close(self, b) -> None:
        try:
            b.close()
        finally:
            server = getattr(b, "own_server", None)
            if server is not None:
                server.stop()

    # -- one group of backends, side by side
    def run_group(self, model: str, n: int, specs: list) -> list[dict]:
        p = self.plan
        lr = 0.05
        opened, records = {}, {}
        for spec in specs:
            key = f"{model}-{n}-{spec.label}"
            rec = {"backend": spec.backend, "n_clients": n, "clients_per_actor": spec.clients_per_actor,
                   "model": model, "dataset": MODELS[model][0], "label": spec.label,
                   "round_seconds_median": None, "round_seconds_p90": None, "rounds_measured": 0,
                   "peak_rss_mb": None, "pss_mb": None, "processes": None,
                   "torch_threads": spec.n_threads(), "overrides": list(spec.extra), "hook": spec.hook,
                   "status": "ok"}
            records[spec] = rec
            try:
                b = self._open(spec, model, n, key)
                b.reset_peak()
                t = time.monotonic()
                b.train(0, [lr] * p.warmup[model])
                rec["build_seconds"] = round(b.build_seconds, 2)
                rec["warmup_seconds"] = round(time.monotonic() - t, 2)
                opened[spec] = b
                self.log(f"  {model} n={n} {spec.label}: built in {b.build_seconds:.1f} s, "
                         f"warm-up {rec['warmup_seconds']:.1f} s")
            except Exception as e:  # noqa: BLE001 - a failing backend is a record, not a crash
                msg = str(e).splitlines()[0][:300]
                rec["status"] = f"skipped: {msg}" if "unavailable" in msg else f"failed: {msg}"
                self.log(f"  {model} n={n} {spec.label}: {rec['status']}")
        # A configuration whose warm-up rounds were far slower than the group's fastest (a
        # multi-threaded process on cores other jobs use can be 10-100x slower) gets shorter
        # blocks, so that it cannot hold the whole benchmark up; its record says so.
        per_round = {k: records[k]["warmup_seconds"] / p.warmup[model] for k in opened}
        fastest = min(per_round.values()) if per_round else 0.0
        rounds_of = {}
        for k in opened:
            R = p.block_rounds[model]
            if fastest > 0 and per_round[k] > max(5 * fastest, 0.5) and R > p.discard + 2:
                R = p.discard + 2
                records[k]["capped_rounds"] = (f"one block of {R} rounds (warm-up {per_round[k] / fastest:.0f}x "
                                               f"the fastest)")
            rounds_of[k] = R
        slow = {k for k in opened if "capped_rounds" in records[k]}
        times = {k: [] for k in opened}
        cpu = {k: {"cpu": 0.0, "cpu_system": 0.0, "rounds": 0} for k in opened}
        t_next = {k: p.warmup[model] for k in opened}
        loads = []
        order = list(opened)
        for blk in range(p.blocks):
            rot = order[blk % len(order):] + order[:blk % len(order)] if order else []
            for k in rot:
                if k in slow and blk > 0:
                    continue  # capped: one short block is enough to say how slow it is
                try:
                    R = rounds_of[k]
                    c0 = opened[k].cpu()
                    start, ends, _ = opened[k].train(t_next[k], [lr] * R)
                    c1 = opened[k].cpu()
                    for f in ("cpu", "cpu_system"):
                        cpu[k][f] += c1.get(f, 0.0) - c0.get(f, 0.0)
                    cpu[k]["rounds"] += R
                    t_next[k] += R
                    gaps = [b - a for a, b in zip([start] + ends[:-1], ends)]
                    times[k] += gaps[p.discard:]
                except Exception as e:  # noqa: BLE001
                    records[k]["status"] = f"failed: {str(e).splitlines()[0][:300]}"
                    order = [o for o in order if o != k]
                    try:
                        self._close(opened.pop(k))
                    except Exception:  # noqa: BLE001
                        pass
            loads.append(os.getloadavg()[0])
        for k, b in opened.items():
            rec = records[k]
            try:
                rec.update(b.memory())
            except Exception as e:  # noqa: BLE001
                rec["status"] = f"memory: {e}"
            med, p90 = _median_p90(times[k])
            if cpu[k]["rounds"]:
                # CPU seconds per round summed over the configuration's processes: what the
                # round costs the machine, much less sensitive to other jobs than wall time.
                rec["cpu_seconds_per_round"] = round(cpu[k]["cpu"] / cpu[k]["rounds"], 5)
                if k.backend == "ray":
                    rec["ray_system_cpu_seconds_per_round"] = round(cpu[k]["cpu_system"] / cpu[k]["rounds"], 5)
            rec.update(round_seconds_median=med, round_seconds_p90=p90, rounds_measured=len(times[k]),
                       load_avg_1m=round(statistics.mean(loads), 2) if loads else None)
            try:
                self._close(b)
            except Exception:  # noqa: BLE001
                pass
        return list(records.values())

    def run(self, specs_of=None, partial: Path | None = None) -> list[dict]:
        """All groups; after each, the records so far go to `partial` (a crash keeps them)."""
        specs_of = specs_of or (lambda model, n: backend_specs(model, n, self.plan))
        out = []
        try:
            for model in self.plan.models:
                for n in self.plan.ns:
                    budget = 0.6 * procs.mem_available_mb()
                    gs = groups(n, specs_of(model, n), budget)
                    for gi, g in enumerate(gs):
                        self.log(f"{model} n={n}: group {gi + 1}/{len(gs)}: "
                                 + ", ".join(s.label for s in g) + f" (load {procs.load_avg()})")
                        recs = self.run_group(model, n, g)
                        for r in recs:
                            r["group"] = gi
                            # local runs in every group as the side-by-side reference; the first
                            # group's is the table's row, the others only give their group's ratios
                            if r["backend"] == "local" and gi > 0:
                                r["backend_role"] = "reference"
                        out += recs
                        if partial is not None:
                            partial.write_text(json.dumps(out, indent=1) + "\n")
        finally:
            for server in self.ray_servers.values():
                server.stop()
        return finalize(out)


def finalize(records: list[dict]) -> list[dict]:
    """Add ratios. The floor is the faster local run (all cores or 1 thread) of the same group
    (side by side); gloo is the gloo record of the same (model, n)."""
    def same(r, o):
        return r["model"] == o["model"] and r["n_clients"] == o["n_clients"]

    def med(r):
        return r["round_seconds_median"] if r and r.get("round_seconds_median") else None

    main = [r for r in records if r.get("backend_role") != "reference"]
    for r in main:
        floor = [med(o) for o in records if same(r, o) and o["backend"] == "local"
                 and o.get("group") == r.get("group") and med(o)]
        glo = next((o for o in main if same(r, o) and o["backend"] == "gloo"), None)
        m = med(r)
        r["local_floor_seconds"] = min(floor) if floor else None
        r["ratio_to_local"] = round(m / min(floor), 3) if m and floor else None
        r["ratio_to_gloo"] = round(m / med(glo), 3) if m and med(glo) else None
        r["gloo_side_by_side"] = bool(glo and glo.get("group") == r.get("group"))
    return main


def validate_records(records: list) -> list[str]:
    """Problems with `records` against the record schema (empty list: valid)."""
    errors = []
    if not isinstance(records, list) or not records:
        return ["records must be a non-empty list"]
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            errors.append(f"record {i}: not an object")
            continue
        for key, tp in SCHEMA.items():
            if key not in r:
                errors.append(f"record {i}: missing {key}")
            elif not isinstance(r[key], tp) or (tp is int and isinstance(r[key], bool)):
                errors.append(f"record {i}: {key}={r[key]!r} is not {tp}")
        if r.get("backend") not in BACKENDS:
            errors.append(f"record {i}: backend {r.get('backend')!r} not in {BACKENDS}")
        if r.get("status") == "ok" and (r.get("round_seconds_median") is None or r.get("peak_rss_mb") is None):
            errors.append(f"record {i}: status ok but no measurement")
    return errors


def _fmt(x, spec):
    return "—" if x is None else format(x, spec)


def markdown(records: list[dict], meta: dict) -> str:
    lines = [
        f"Benchmark: {meta['date']} on {meta['machine']}; {meta['versions']}.",
        f"Load average (1, 5, 15 min) at start {meta['load_start']}, at end {meta['load_end']}"
        f" (the benchmark's own processes count: 32 gloo ranks or 34 Ray processes alone give a load of 10-20)."
        + "".join(f" Rows for {', '.join(f'{m} n={n}' for m, n in r['redone'])} re-measured {r['date']} "
                  f"(load {r['load_start']} -> {r['load_end']})." for r in meta.get("reruns", [])),
        "Median round time after warm-up; the configurations of one (model, n) run side by side in "
        "interleaved blocks of rounds. × local: to the local engine's floor, the faster of its runs with "
        "all cores and with 1 thread in the same group; × gloo: to the torch.distributed gloo peer. "
        "Ray and gloo processes use 1 torch thread each (they share the cores). Peak RSS = sum over "
        "the configuration's processes (driver, actors, ranks) of each one's high-water mark, which counts "
        "shared library pages once per process; PSS = proportional set size after the measured rounds. "
        "CPU ms/round: CPU time of all the configuration's processes per round (on a loaded machine the "
        "scheduler gives a configuration with more runnable processes a larger share of the cores, so "
        "wall-time ratios then favour many processes; CPU per round does not).",
        "",
        "| model | n | configuration | clients/actor | threads | round ms (median) | p90 ms | × local | × gloo "
        "| CPU ms/round | peak RSS MB | PSS MB | processes | load 1m | status |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        med = r["round_seconds_median"]
        p90 = r.get("round_seconds_p90")
        lines.append(
            f"| {r['model']} | {r['n_clients']} | {r.get('label', r['backend'])} | {r['clients_per_actor']} | "
            f"{r.get('torch_threads', '')} | "
            f"{_fmt(med and med * 1e3, '.1f')} | {_fmt(p90 and p90 * 1e3, '.1f')} | "
            f"{_fmt(r.get('ratio_to_local'), '.2f')} | {_fmt(r.get('ratio_to_gloo'), '.2f')} | "
            f"{_fmt(r.get('cpu_seconds_per_round') and r['cpu_seconds_per_round'] * 1e3, '.0f')} | "
            f"{_fmt(r.get('peak_rss_mb'), '.0f')} | {_fmt(r.get('pss_mb'), '.0f')} | "
            f"{_fmt(r.get('processes'), 'd')} | {_fmt(r.get('load_avg_1m'), '.2f')} | {r.get('status', 'ok')} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in records})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        rs = [r for r in records if r["model"] == model and r["round_seconds_median"]]
        labels = {}
        for r in rs:
            lab = r["label"]
            if r["backend"] == "ray" and r["clients_per_actor"] > 1 and lab.startswith("ray k="):
                lab = "ray k=n/2" + (" packed" if lab.endswith("packed") else "")
            labels.setdefault(lab, []).append((r["n_clients"], r["round_seconds_median"] * 1e3))
        for lab, pts in sorted(labels.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lab)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("clients n")
        ax.set_ylabel("round time, ms (median)")
        ax.set_title(f"{model} ({MODELS[model][0]}, batch 32)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(records: list[dict], meta: dict, out: Path) -> None:
    """FILE.json (records), FILE.md (table), FILE.meta.json, FILE.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(records, meta))
    out.with_name(out.stem + ".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    try:
        plot(records, out.with_suffix(".png"))
    except Exception as e:  # noqa: BLE001 - the numbers matter more than the figure
        print(f"plot failed: {e}", file=sys.stderr)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


def merge(base: Path, patch: Path) -> None:
    """Replace base's records of every (model, n) that `patch` measured (a re-run of part of
    the grid, e.g. after a failure), keeping both runs' metadata."""
    recs, new = json.loads(base.read_text()), json.loads(patch.read_text())
    redone = {(r["model"], r["n_clients"]) for r in new}
    merged = [r for r in recs if (r["model"], r["n_clients"]) not in redone] + new
    order = {m: i for i, m in enumerate(MODELS)}
    merged.sort(key=lambda r: (order.get(r["model"], 99), r["n_clients"]))
    meta = json.loads(base.with_name(base.stem + ".meta.json").read_text())
    meta_p = json.loads(patch.with_name(patch.stem + ".meta.json").read_text())
    meta.setdefault("reruns", []).append({"date": meta_p["date"], "redone": sorted(map(list, redone)),
                                          "load_start": meta_p["load_start"], "load_end": meta_p["load_end"]})
    write(merged, meta, base)


def main(quick: bool = False, output: str | None = None, mode: str | None = None, plan: Plan | None = None) -> int:
    mode = mode or ("quick" if quick else "full")
    plan = plan or PLANS[mode]
    meta = metadata()
    meta["mode"] = mode
    t0 = time.monotonic()
    log = lambda s: print(f"[{time.monotonic() - t0:6.1f}s] {s}", flush=True)  # noqa: E731
    print(f"bench ({mode}): models {', '.join(plan.models)}, n in {list(plan.ns)}; {meta['machine']}; "
          f"load {meta['load_start']}", flush=True)
    partial = Path(output).with_suffix(".partial.json") if output else None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
    records = Bench(plan, log=log).run(partial=partial)
    if partial is not None and partial.exists():
        partial.unlink()
    meta["load_end"] = procs.load_avg()
    meta["seconds"] = round(time.monotonic() - t0, 1)
    for r in records:
        r["mode"] = mode
    table = markdown(records, meta)
    print()
    print(table)
    print(f"bench took {meta['seconds']:.0f} s")
    errors = validate_records(records)
    if output:
        write(records, meta, Path(output))
    if errors:
        print("record schema problems:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(PLANS), default="quick")
    ap.add_argument("--output", default=None)
    ap.add_argument("--models", default=None, help="comma-separated subset, e.g. resnet20")
    ap.add_argument("--ns", default=None, help="comma-separated client counts, e.g. 16,32")
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--merge", nargs=2, metavar=("BASE.json", "RERUN.json"), default=None,
                    help="replace BASE's (model, n) rows by RERUN's and re-render the table and plot")
    args = ap.parse_args()
    if args.merge:
        merge(Path(args.merge[0]), Path(args.merge[1]))
        sys.exit(0)
    import dataclasses
    plan = PLANS[args.mode]
    if args.models:
        plan = dataclasses.replace(plan, models=tuple(args.models.split(",")))
    if args.ns:
        plan = dataclasses.replace(plan, ns=tuple(int(x) for x in args.ns.split(",")))
    if args.blocks:
        plan = dataclasses.replace(plan, blocks=args.blocks)
    sys.exit(main(output=args.output, mode=args.mode, plan=plan))
