"""A compressed round against an uncompressed one on the local engine, side by side in one
process: the default model (cnn1d on mnist1d, ring, QG-DSGDm-N) at n clients, plain gossip
and CHOCO-Gossip with `top_k` (engine/choco.py), their rounds interleaved in blocks so that
other load on the machine falls on both alike.

    python -m bench.choco_round [--n 16 1024] [--keep 0.1] [--blocks 5] [--rounds 4] [--device cpu]

Prints one line per n: the median round time of each and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.harness import config_dict


def engines(n: int, keep: float, device: str):
    from qgm_ray.config import from_dict
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.runner import run as runner

    out = {}
    for label, extra in (("plain", []), (f"top_k {keep:g}", ["compression.op=top_k", f"compression.keep={keep}",
                                                             "compression.consensus_lr=0.5"])):
        d = config_dict("cnn1d", n, "local", n, [f"device={device}", "compute.pack_clients=auto", *extra])
        cfg = from_dict(d)
        ds, parts = runner.prepare(cfg, log=lambda m: None)
        out[label] = LocalEngine(cfg, ds, parts, device=device)
    return out


def measure(n: int, keep: float, blocks: int, rounds: int, device: str) -> dict:
    es = engines(n, keep, device)
    times = {label: [] for label in es}
    t0 = {label: 0 for label in es}
    for label, e in es.items():   # warm-up: allocations, plans, caches
        e.train(range(0, 2), lambda t: 0.05)
        t0[label] = 2
    for _ in range(blocks):
        for label, e in es.items():
            for _ in range(rounds):
                start = time.perf_counter()
                e.train(range(t0[label], t0[label] + 1), lambda t: 0.05)
                if device.startswith("cuda"):
                    import torch
                    torch.cuda.synchronize()
                times[label].append(time.perf_counter() - start)
                t0[label] += 1
    med = {label: statistics.median(v) for label, v in times.items()}
    plain, comp = med["plain"], med[f"top_k {keep:g}"]
    p = es["plain"].exchange.payload_floats
    return {"n": n, "P": p, "plain_s": plain, "compressed_s": comp, "ratio": comp / plain,
            "bytes_plain": es["plain"].exchange.payload_bytes, "bytes_compressed": es[f"top_k {keep:g}"].exchange.payload_bytes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[16, 1024])
    ap.add_argument("--keep", type=float, default=0.1)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    for n in a.n:
        r = measure(n, a.keep, a.blocks, a.rounds, a.device)
        print(f"n={r['n']} P={r['P']} {a.device}: plain {r['plain_s'] * 1e3:.1f} ms/round, top_k keep {a.keep:g} "
              f"{r['compressed_s'] * 1e3:.1f} ms/round, ratio {r['ratio']:.2f}; payload bytes {r['bytes_plain']} -> "
              f"{r['bytes_compressed']}", flush=True)


if __name__ == "__main__":
    main()
