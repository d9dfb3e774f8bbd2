"""`python main.py bench --device cuda [--quick] [--output FILE.json]`: blocks against the GPU's ceiling.

For ResNet-20 (BatchNorm) and ResNet-EvoNorm-20 (the paper's model) at n clients (ring,
QG-DSGDm-N, batch b = 32 per client, CIFAR-shaped synthetic images), in the same process and
run, one after the other on the same GPU:

- local block: the local engine, its n clients in one packed block on the GPU;
- ray: the Ray engine with `clients_per_actor: auto` (one block per GPU), joining the Ray
  that $RAY_ADDRESS names or starting a local one;
- ceiling: one model trained with SGD at batch n*b (same samples per step, no decentralization).

A round's time is the mean over the measured rounds after warm-up: the wall time of one
`train` call of that many rounds, which ends synchronised (the local engine reads its losses
once per 16 rounds on a GPU, so single rounds are not timed); the ceiling is timed the same way
and synchronises once at the end. throughput / ceiling = ceiling round time / engine round time.
`--quick` (n in {16, 64}) fits in about 3 minutes on one H100/H200. Without CUDA the command
exits 2 with one line (nothing is measured on a CPU: bench/harness.py is the CPU benchmark).
"""
from __future__ import annotations

import sys
import time

MODELS = ("resnet20", "resnet_evonorm20")
PLANS = {
    "full": {"ns": (16, 64, 256), "warmup": 3, "rounds": 12},
    "quick": {"ns": (16, 64), "warmup": 2, "rounds": 6},
}
BATCH = 32


def config(model: str, n: int, backend: str, device: str, image=(3, 32, 32), extra=()):
    from qgm_ray.config import load_config

    samples = max(1000, 80 * n)   # every client holds >= 2 batches of 32
    return load_config(None, [
        f"model.name={model}", "data.name=synthetic_image",
        f"data.options={{num_samples: {samples}, shape: [{', '.join(map(str, image))}]}}",
        f"topology.n_clients={n}", "topology.name=ring", "algorithm.name=qg_dsgdm_n",
        f"data.batch_size={BATCH}", "data.alpha=1.0", f"device={device}", f"backend={backend}",
        "progress=false", *extra])


def _time_rounds(engine, warmup: int, rounds: int) -> float:
    """Mean round time of `rounds` rounds after `warmup` (either engine; each `train` call
    returns after reading its last losses, so the GPU is idle at both ends)."""
    engine.train(range(warmup), lambda t: 0.05)
    start = time.perf_counter()
    engine.train(range(warmup, warmup + rounds), lambda t: 0.05)
    return (time.perf_counter() - start) / rounds


def time_local_block(cfg, device: str, warmup: int, rounds: int) -> dict:
    from qgm_ray import build
    from qgm_ray.engine.local import LocalEngine

    cfg = _with_k(cfg, cfg.topology.n_clients)   # one block of n
    ds = build.build_dataset(cfg)
    engine = LocalEngine(cfg, ds, build.build_partition(cfg, ds), device=device)
    try:
        return {"round_seconds": _time_rounds(engine, warmup, rounds), "packed": all(b.packed for b in engine.blocks),
                "blocks": len(engine.blocks)}
    finally:
        engine.close()


def time_ray(cfg, warmup: int, rounds: int, log=print) -> dict:
    from qgm_ray import build
    from qgm_ray.engine.ray_engine import RayEngine

    ds = build.build_dataset(cfg)
    engine = RayEngine(cfg, ds, build.build_partition(cfg, ds), log=log)
    try:
        return {"round_seconds": _time_rounds(engine, warmup, rounds), "actors": engine._info["n_actors"],
                "clients_per_actor": engine.cfg.ray.clients_per_actor}
    finally:
        engine.close()


def time_ceiling(cfg, device: str, warmup: int, rounds: int) -> dict:
    """One model, batch n*b, plain SGD with momentum: what the GPU does with no decentralization."""
    import torch
    import torch.nn.functional as F

    from qgm_ray import build
    from qgm_ray.data import pixel_table, to_float

    ds = build.build_dataset(cfg)
    model = build.build_model(cfg, ds).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    batch = cfg.topology.n_clients * cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    x, y = ds.train_x.to(device), ds.train_y.to(device)
    table = pixel_table(ds.norm).to(device) if ds.norm is not None else None   # uint8 pixels, as the blocks
    start = None
    for step in range(warmup + rounds):
        if step == warmup:
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        idx = torch.randint(0, len(x), (batch,), generator=g).to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(to_float(x[idx], table)), y[idx])
        loss.backward()
        opt.step()
    loss.item()   # one read at the end, as the engines' train calls end
    return {"round_seconds": (time.perf_counter() - start) / rounds}


def _with_k(cfg, k: int):
    from qgm_ray.layout import with_clients_per_block
    return with_clients_per_block(cfg, k)


def run(device: str, ns, models=MODELS, warmup: int = 2, rounds: int = 6, ray: bool = True,
        image=(3, 32, 32), log=print) -> list[dict]:
    """The records, one per (model, n, configuration)."""
    import torch

    records = []
    for model in models:
        for n in ns:
            cfg = config(model, n, "local", device, image=image)
            ceiling = time_ceiling(cfg, device, warmup, rounds)
            rows = [("ceiling", ceiling), ("local block", time_local_block(cfg, device, warmup, rounds))]
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()
            if ray:
                rows.append(("ray auto", time_ray(config(model, n, "ray", device, image=image), warmup, rounds,
                                                  log=lambda m: None)))
            for label, r in rows:
                rec = {"model": model, "n_clients": n, "configuration": label, "device": device,
                       "batch_per_client": BATCH, **r,
                       "throughput_vs_ceiling": ceiling["round_seconds"] / r["round_seconds"]}
                records.append(rec)
                log(f"{model} n={n} {label}: {r['round_seconds'] * 1e3:.1f} ms/round, "
                    f"{rec['throughput_vs_ceiling']:.2f}x the ceiling's throughput")
    return records


def markdown(records: list[dict], meta: dict) -> str:
    lines = [f"GPU bench ({meta.get('mode')}): {meta.get('gpu')}, torch {meta.get('torch')}; ring, QG-DSGDm-N, "
             f"batch {BATCH} per client; ceiling = one model at batch n*{BATCH}.", "",
             "| model | n | configuration | round ms (median) | throughput / ceiling |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['model']} | {r['n_clients']} | {r['configuration']} | "
                     f"{r['round_seconds'] * 1e3:.1f} | {r['throughput_vs_ceiling']:.2f} |")
    return "\n".join(lines) + "\n"


def main(quick: bool = False, output: str | None = None) -> int:
    import torch

    from bench.reporting import report

    if not torch.cuda.is_available():
        print("bench --device cuda: no CUDA device is visible (torch.cuda.is_available() is False); "
              "use `python main.py bench` for the CPU benchmark", file=sys.stderr)
        return 2
    mode = "quick" if quick else "full"
    plan = PLANS[mode]
    meta = {"mode": mode, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    t0 = time.monotonic()
    records = run("cuda", plan["ns"], warmup=plan["warmup"], rounds=plan["rounds"],
                  log=lambda s: print(f"[{time.monotonic() - t0:6.1f}s] {s}", flush=True))
    meta["seconds"] = round(time.monotonic() - t0, 1)
    report(markdown(records, meta), meta, records, output)
    return 0
