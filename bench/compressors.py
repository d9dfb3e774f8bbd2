"""What compression costs a round: each built-in compressor on a block of n client rows of P
floats, against an uncompressed local-engine round of the same n clients.

    python -m bench.compressors [--n 1024] [--rounds 4] [--reps 5] [--no-round]

The block is the parameter count of cnn1d (P = 5210, mnist1d), the model the engine round
trains (ring, QG-DSGDm-N, batch 32, one torch thread as a ClientActor has). compress runs on
all n rows (every client's q updates its public copy); encode and decode are timed on all n
rows too, the most a round can need (a ring exports and receives 2 rows per block). The last
column adds compress alone to the round: CHOCO's own updates of x-hat and s are the
exchange's work and not counted here. Times are medians of `reps` calls, each call after one
warm-up; the machine's load average is printed with them, since a shared machine's other
work slows everything alike.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

CASES = (("none", {}), ("top_k", {"keep": 0.1}), ("top_k", {"keep": 0.01}), ("random_k", {"keep": 0.1}),
         ("qsgd", {"levels": 15}), ("sign", {}))


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def engine_round_ms(n: int, rounds: int) -> tuple[float, int]:
    """(median ms of an uncompressed local-engine round of cnn1d at n clients, P)."""
    from bench import harness
    from qgm_ray.config import from_dict
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.runner.run import prepare

    cfg = from_dict(harness.config_dict("cnn1d", n, "local", extra=["compute.pack_clients=auto"]))
    ds, parts = prepare(cfg, log=lambda _: None)
    engine = LocalEngine(cfg, ds, parts)
    engine.train(range(0, 1), lambda t: 0.05)   # warm-up
    times = []
    for t in range(1, 1 + rounds):
        start = time.perf_counter()
        engine.train(range(t, t + 1), lambda t: 0.05)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), int(engine.params.shape[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-round", action="store_true", help="skip the engine round (P = 5210)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from qgm_ray.compression import make_compressor, stream_keys

    round_ms, d = (None, 5210) if args.no_round else engine_round_ms(args.n, args.rounds)
    rows = torch.randn(args.n, d, generator=torch.Generator().manual_seed(0))
    keys = stream_keys(0, range(args.n), 1)
    print(f"block ({args.n}, {d}) float32; load average {os.getloadavg()[0]:.1f}")
    if round_ms is not None:
        print(f"uncompressed local-engine round (cnn1d, ring, n={args.n}): {round_ms:.1f} ms")
    print(f"{'compressor':22s} {'bytes/row':>9s} {'compress ms':>12s} {'encode ms':>10s} {'decode ms':>10s}"
          + ("  round + compress" if round_ms is not None else ""))
    for name, options in CASES:
        comp = make_compressor(name, **options)
        wire = comp.encode(rows, keys)
        c = _median_ms(lambda: comp.compress(rows, keys), args.reps)
        e = _median_ms(lambda: comp.encode(rows, keys), args.reps)
        dec = _median_ms(lambda: comp.decode(wire, keys, d), args.reps)
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        ratio = f"  {(round_ms + c) / round_ms:.2f}x" if round_ms is not None else ""
        print(f"{label:22s} {comp.wire_bytes(d):9d} {c:12.1f} {e:10.1f} {dec:10.1f}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
