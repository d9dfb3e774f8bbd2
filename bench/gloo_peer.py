"""The torch.distributed (gloo) peer: the transport of the official epfml code, for comparison.

n OS processes, one client each, rendezvous over TCP on 127.0.0.1. Every round each rank
computes the same `Block.pre_mix` as the engines (a block of 1), sends its payload to its out-neighbours and
receives its in-neighbours' payloads with point-to-point `isend` / `irecv`, mixes them with
its row of W(t), and calls `Block.post_mix`. Same config, same seed => same numbers as the
local engine (up to float summation order), which `tests/test_bench.py` checks.

The parent process (`GlooPeer`) never imports torch; it drives the ranks over pipes in blocks
of rounds and reads the ranks' round-end timestamps (CLOCK_MONOTONIC, shared by every
process on the machine), so a round's time is `max over ranks of its end - the previous one's`.
A rank (`_rank_main`) and its driver are the two ends of one pipe protocol ("train", "params",
"stop" and their replies), which one module holds whole.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mix(payload, w, rank: int, in_nb: list[int], out_nb: list[int], dist):
    """mixed = sum_j W[rank, j] * payload_j over j in {rank} + in-neighbours, via isend/irecv,
    summed by the engines' own `block_mix` for a block of 1 (so the numbers agree bit for bit
    with engines whose blocks are of 1)."""
    import torch

    from qgm_ray.engine.base import block_mix, wiring

    have = {j: torch.empty_like(payload[0]) for j in in_nb}
    reqs = [dist.isend(payload[0], j) for j in out_nb] + [dist.irecv(have[j], j) for j in in_nb]
    for r in reqs:
        r.wait()
    rows, sources = wiring(w, [rank])
    return block_mix(payload, [rank], rows, sources, [have[j] for j in sources])


def _rank_main(rank: int, n: int, port: int, cfg_dict: dict, threads: int, conn) -> None:
    import torch
    import torch.distributed as dist

    from qgm_ray import build
    from qgm_ray.config import from_dict
    from qgm_ray.engine.assembly import build_block
    from qgm_ray.engine.base import mixing_matrix

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=n)
    cfg = from_dict(cfg_dict)
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    client = build_block(cfg, ds, parts, [rank], "cpu")
    del ds  # a rank keeps only its own shard, like the official code's data loader
    topology = build.build_topology(cfg, n)
    centralized = client.algorithm.centralized

    def neighbours(t: int):
        w = mixing_matrix(topology, centralized, n, t)     # a SparseW (qgm_ray/sparse_w.py)
        in_nb = [j for j in w.row(rank)[0].tolist() if j != rank]
        out_nb = [j for j in w.col(rank).tolist() if j != rank]
        return w, in_nb, out_nb

    conn.send(("ready", os.getpid()))
    while True:
        cmd = conn.recv()
        if cmd[0] == "train":
            _, t0, lrs = cmd
            ends, losses = [], []
            for k, lr in enumerate(lrs):
                t = t0 + k
                payload = client.pre_mix(lr).contiguous()
                if centralized:
                    dist.all_reduce(payload)
                    mixed = payload.div_(n)
                else:
                    w, in_nb, out_nb = neighbours(t)
                    mixed = _mix(payload, w, rank, in_nb, out_nb, dist)
                client.post_mix(mixed, lr)
                ends.append(time.monotonic())
                losses.append(float(client.losses[0]))
            conn.send((ends, losses))
        elif cmd[0] == "params":
            conn.send(client.params[0].detach().numpy().copy())
        elif cmd[0] == "stop":
            dist.destroy_process_group()
            conn.send("stopped")
            return


class GlooPeer:
    """n gloo ranks, one client each, driven in blocks of rounds (see module docstring)."""

    def __init__(self, cfg_dict: dict, threads: int = 1, timeout: float = 600.0):
        self.n = int(cfg_dict["topology"]["n_clients"])
        self.timeout = timeout
        ctx = mp.get_context("spawn")
        port = free_port()
        self.conns, self.procs = [], []
        for rank in range(self.n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_rank_main, args=(rank, self.n, port, cfg_dict, threads, child),
                            name=f"gloo-rank-{rank}", daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        self.pids = [self._recv(c)[1] for c in self.conns]

    def _recv(self, conn):
        if not conn.poll(self.timeout):
            self.close()
            raise TimeoutError(f"gloo peer: a rank did not answer within {self.timeout:.0f} s")
        try:
            return conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError("gloo peer: a rank died (see its traceback above)") from None

    def train(self, t0: int, lrs: list[float]) -> tuple[float, list[float], list[float]]:
        """Run rounds t0..t0+len(lrs)-1 on every rank. Returns (start, round ends, mean losses):
        a round ends when its slowest rank has finished it."""
        start = time.monotonic()
        for c in self.conns:
            c.send(("train", t0, list(lrs)))
        replies = [self._recv(c) for c in self.conns]
        ends = [max(r[0][k] for r in replies) for k in range(len(lrs))]
        losses = [sum(r[1][k] for r in replies) / self.n for k in range(len(lrs))]
        return start, ends, losses

    def params(self) -> list:
        for c in self.conns:
            c.send(("params",))
        return [self._recv(c) for c in self.conns]

    def close(self) -> None:
        for c, p in zip(self.conns, self.procs):
            try:
                if p.is_alive():
                    c.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
