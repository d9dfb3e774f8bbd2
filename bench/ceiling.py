"""`python main.py bench --ceiling [--quick] [--output FILE.json]`: the local engine against the CPU's ceiling.

For cnn1d and mlp at n clients (ring, QG-DSGDm-N, batch b = 32 per client, synthetic
mnist1d-shaped data: 40 features, 10 classes, 64 training samples per client; bench/scale.py's
config), in one process on one torch thread (compute.torch_threads=1):

- engine: one round of the local engine in its own layout (one block per core, packed where
  `compute.pack_clients: auto` packs);
- ceiling: one step of one model trained with SGD (momentum, Nesterov, weight decay) at batch
  n*b on the same thread: the same samples per step with no decentralization.

Both are built and warmed up, then timed in interleaved blocks of rounds (engine, ceiling,
engine, ...), so the machine's other load hits them alike; a round's time is the block's wall
time divided by its rounds, and each reports the median over its blocks. ceiling ratio =
ceiling round / engine round (1: the engine trains n models as fast as one at the large
batch). `--quick` measures n in {16, 64} with fewer blocks.

Ratio bound: the ceiling steps one model's P parameters, the engine n models' n*P, and no
fusion of a round's passes moves fewer bytes than its state and its exchange need (MIN_FLOATS
a client-parameter). The traffic floor is those bytes at the rate this thread moves
n*P-float arrays (the size of the run's rows, so the cache level is the run's), measured
beside the rounds; with the engine's forward/backward no faster than the ceiling's whole
step, ceiling ratio <= ceiling / (ceiling + floor). A target above the bound needs fewer bytes
a client-parameter, not faster kernels.
"""
from __future__ import annotations

import statistics
import time

MODELS = ("cnn1d", "mlp")
PLANS = {
    "full": {"ns": (16, 256, 1024), "warmup": 2, "blocks": 7, "seconds_per_block": 0.5},
    "quick": {"ns": (16, 64), "warmup": 1, "blocks": 3, "seconds_per_block": 0.2},
}


# The engine as configured (compute.kernels auto) and on vmap, each against the same ceiling.
VARIANTS = {"default": (), "vmap": ("compute.kernels=vmap",)}

# float32 values a round moves per client-parameter, however its passes are fused:
# QG-DSGDm-N (the bench's rule) reads and writes its parameters and its momentum, and writes
# the payload that its neighbours read before any of them can mix. The gradient is left
# out: a kernel could in principle consume it as the backward produces it.
MIN_FLOATS = 6


class Ceiling:
    """One model at batch n*b, stepped one round at a time (the arithmetic of bench/gpu.py's
    time_ceiling, on the CPU)."""

    def __init__(self, cfg, ds):
        import torch

        from qgm_ray import build

        self.model = build.build_model(cfg, ds).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        self.batch = cfg.topology.n_clients * cfg.data.batch_size
        self.gen = torch.Generator().manual_seed(0)
        self.x, self.y = ds.train_x, ds.train_y

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        from qgm_ray.data import to_float

        idx = torch.randint(0, len(self.x), (self.batch,), generator=self.gen)
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(to_float(self.x[idx], None)), self.y[idx]).backward()
        self.opt.step()


def measure(model: str, n: int, plan: dict, variants: dict) -> list[dict]:
    """Median round seconds of the engine in each variant ({label: config overrides}) and of
    the ceiling, for one (model, n), interleaved: one record per variant."""
    import torch

    from bench import procs
    from bench.scale import config
    from qgm_ray import build
    from qgm_ray.config import from_dict, parse_override, set_dotted
    from qgm_ray.engine.local import LocalEngine

    base = config("local", n, model, "qg_dsgdm_n", "ring")
    ds = build.build_dataset(base)
    parts = build.build_partition(base, ds)
    engines, cfgs = {}, {}
    for label, overrides in variants.items():
        d = base.to_dict()
        for key, value in map(parse_override, overrides):
            set_dotted(d, key, value)
        cfgs[label] = cfg = from_dict(d)
        engines[label] = LocalEngine(cfg, ds, parts)
    torch.set_num_threads(base.compute.torch_threads)   # what every LocalEngine sets
    ceiling = Ceiling(base, ds)
    load = procs.load_avg()[0]
    done = dict.fromkeys(engines, 0)

    def stepper(label):
        def rounds(r):
            engines[label].train(range(done[label], done[label] + r), lambda t: 0.05)
            done[label] += r
        return rounds

    def ceiling_rounds(r):
        for _ in range(r):
            ceiling.step()

    # One r2w1 pass (2 reads, 1 write) over n*P floats moves 3 floats a client-parameter.
    num_params = engines[next(iter(engines))].blocks[0].num_params
    a, b, c = (torch.ones(n * num_params) for _ in range(3))

    def traffic_rounds(r):
        for _ in range(r):
            torch.add(a, b, out=c)

    steps = {**{label: stepper(label) for label in engines}, "ceiling": ceiling_rounds, "traffic": traffic_rounds}
    try:
        for fn in steps.values():
            fn(plan["warmup"])
        # rounds per block from one timed round of each, so a block lasts about seconds_per_block
        per = {}
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn(1)
            per[name] = max(1, round(plan["seconds_per_block"] / max(time.perf_counter() - t0, 1e-6)))
        times: dict = {name: [] for name in steps}
        for _ in range(plan["blocks"]):
            for name, fn in steps.items():
                t0 = time.perf_counter()
                fn(per[name])
                times[name].append((time.perf_counter() - t0) / per[name])
        ceil = statistics.median(times["ceiling"])
        floor = statistics.median(times["traffic"]) * MIN_FLOATS / 3
        after = procs.load_avg()[0]
        out = []
        for label, engine in engines.items():
            eng = statistics.median(times[label])
            out.append({"model": model, "n_clients": n, "variant": label, "overrides": list(variants[label]),
                        "blocks": len(engine.blocks), "clients_per_block": engine.k,
                        "kernels": sorted({b.kernels if b.packed else "unpacked" for b in engine.blocks}),
                        "torch_threads": cfgs[label].compute.torch_threads,
                        "engine_round_seconds": eng, "ceiling_round_seconds": ceil, "ceiling_ratio": ceil / eng,
                        "num_params": num_params, "traffic_floor_seconds": floor,
                        "ratio_bound": ceil / (ceil + floor),
                        "engine_rounds_per_block": per[label], "ceiling_rounds_per_block": per["ceiling"],
                        "engine_round_seconds_all": times[label], "ceiling_round_seconds_all": times["ceiling"],
                        "load_1min": [load, after]})
        return out
    finally:
        for engine in engines.values():
            engine.close()


def markdown(records: list[dict], meta: dict) -> str:
    lines = [f"Ceiling bench ({meta['mode']}), {meta['date']} UTC, {meta['machine']}; {meta['versions']}.",
             "Local engine vs one model at batch n x 32 with SGD, one torch thread, interleaved; "
             f"load: 1-minute load average before / after. Traffic floor: {MIN_FLOATS} float32 a "
             "client-parameter at this thread's rate over n*P-float arrays; ratio bound = ceiling / "
             "(ceiling + floor).", "",
             "| model | n | variant | blocks x k | kernels | engine ms | ceiling ms | ceiling ratio | "
             "traffic floor ms | ratio bound | load |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['n_clients']} | {r['variant']} | {r['blocks']} x {r['clients_per_block']} | "
                     f"{','.join(r['kernels'])} | "
                     f"{r['engine_round_seconds'] * 1e3:.1f} | {r['ceiling_round_seconds'] * 1e3:.1f} | "
                     f"{r['ceiling_ratio']:.2f} | {r['traffic_floor_seconds'] * 1e3:.1f} | {r['ratio_bound']:.2f} | "
                     f"{r['load_1min'][0]:.1f} / {r['load_1min'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def main(quick: bool = False, output: str | None = None, models=MODELS, ns=None, variants=None) -> int:
    from bench.reporting import metadata, report

    mode = "quick" if quick else "full"
    plan = PLANS[mode]
    meta = {"mode": mode, **metadata()}
    records = []
    for n in ns or plan["ns"]:
        for model in models:
            for rec in measure(model, n, plan, variants or VARIANTS):
                records.append(rec)
                print(f"{model} n={n} {rec['variant']}: engine {rec['engine_round_seconds'] * 1e3:.1f} ms, ceiling "
                      f"{rec['ceiling_round_seconds'] * 1e3:.1f} ms, ratio {rec['ceiling_ratio']:.2f} "
                      f"(bound {rec['ratio_bound']:.2f})", flush=True)
    report(markdown(records, meta), meta, records, output)
    return 0


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--output", default=None)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--n", type=int, nargs="*", default=None)
    a = ap.parse_args()
    sys.exit(main(a.quick, a.output, tuple(a.models), a.n))
