"""Each benchmarked backend runs in processes of its own, driven over a pipe in blocks of rounds.

Why not in the harness process: peak RSS must be the backend's own (a process's high-water
mark cannot be shared between backends), torch's thread count is per process, and keeping
every backend alive at once is what lets the harness interleave them block by block, so a
neighbour's background load hits all of them alike.

- `EngineServer("local")`: one process holding a `LocalEngine` (the floor).
- `EngineServer("ray")`: one process that starts a private Ray cluster (`address="local"`, so
  it never joins someone else's) and holds any number of `RayEngine`s at once; an engine's
  processes are the Ray workers that became actors while it was built.
- `bench.gloo_peer.GlooPeer`: n gloo ranks.

All three answer `train(t0, lrs) -> (start, round ends, mean losses)` with CLOCK_MONOTONIC
timestamps and `memory() -> {peak_rss_mb, pss_mb, processes, ...}`.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback

from bench import procs


def _clear_peak(pid: int) -> None:
    # Linux >= 4.0: writing 5 resets the process's VmHWM to its current RSS.
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _ray_worker_pids(root: int) -> tuple[list[int], list[int]]:
    """(actor processes, Ray system processes) under `root`. Idle pooled workers are neither."""
    actors, system = [], []
    for pid in procs.descendants(root):
        cmd = procs.cmdline(pid)
        if cmd.startswith("ray::") and not cmd.startswith(RAY_AGENTS):
            if not cmd.startswith("ray::IDLE"):
                actors.append(pid)
        else:
            system.append(pid)
    return actors, system


def _serve(conn, kind: str, threads: int, ray_init: dict) -> None:
    import torch

    from qgm_ray import build
    from qgm_ray.runner import run as runner
    from qgm_ray.config import from_dict

    torch.set_num_threads(threads)
    engines: dict = {}
    owned: dict = {}  # key -> actor pids
    before: dict = {}  # key -> worker pids that existed before the engine was built
    me = os.getpid()
    if kind == "ray":
        import ray
        # Workers must import bench.patches (setup hooks): they inherit this environment.
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
        # Ray starts its workers at nice 15 (so that drivers stay responsive). The local and
        # gloo backends run at nice 0; on a machine shared with other jobs that alone would
        # decide the comparison, so the benchmark's actors run at nice 0 too.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(**{"address": "local", **ray_init})
    conn.send(("ready", me))
    while True:
        cmd = conn.recv()
        op = cmd[0]
        try:
            if op == "build":
                _, key, cfg_dict = cmd
                cfg = from_dict(cfg_dict)
                ds = build.build_dataset(cfg)
                parts = build.build_partition(cfg, ds)
                if kind == "ray":
                    before[key] = set(_ray_worker_pids(me)[0]).union(*owned.values())
                t = time.monotonic()
                engines[key] = runner.make_engine(cfg, ds, parts, log=lambda s: None)
                conn.send(("ok", time.monotonic() - t))
            elif op == "train":
                _, key, t0, lrs = cmd
                ends, losses = [], []

                def on_round(record):
                    ends.append(time.monotonic())
                    losses.append(record.loss)

                start = time.monotonic()
                engines[key].train(range(t0, t0 + len(lrs)), lambda r: lrs[r - t0], on_round)
                if key in before:  # actors exist once a round has run: they are this engine's
                    owned[key] = sorted(set(_ray_worker_pids(me)[0]) - before.pop(key))
                conn.send(("ok", (start, ends, losses)))
            elif op == "reset_peak":
                _, key = cmd
                for pid in [me] + owned.get(key, []):
                    _clear_peak(pid)
                conn.send(("ok", None))
            elif op == "memory":
                _, key = cmd
                pids = [me] + owned.get(key, [])
                out = procs.summary(pids)
                if kind == "ray":
                    _, system = _ray_worker_pids(me)
                    sysm = procs.summary(system)
                    out["ray_system_pss_mb"] = sysm["pss_mb"]
                    out["ray_system_processes"] = sysm["processes"]
                conn.send(("ok", out))
            elif op == "cpu":
                _, key = cmd
                out = {"cpu": procs.cpu_seconds([me] + owned.get(key, []))}
                if kind == "ray":
                    out["cpu_system"] = procs.cpu_seconds(_ray_worker_pids(me)[1])
                conn.send(("ok", out))
            elif op == "close":
                _, key = cmd
                eng = engines.pop(key, None)
                owned.pop(key, None)
                if eng is not None:
                    eng.close()
                conn.send(("ok", None))
            elif op == "stop":
                for eng in engines.values():
                    eng.close()
                if kind == "ray":
                    import ray
                    ray.shutdown()
                conn.send(("ok", None))
                return
        except Exception as e:  # noqa: BLE001 - the harness records the failure and goes on
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))


class EngineServer:
    def __init__(self, kind: str, threads: int = 1, ray_init: dict | None = None, timeout: float = 900.0):
        self.kind, self.timeout = kind, timeout
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, kind, threads, ray_init or {}),
                                name=f"bench-{kind}", daemon=False)
        self.proc.start()
        self.pid = self._recv()[1]

    def _recv(self):
        if not self.conn.poll(self.timeout):
            raise TimeoutError(f"bench {self.kind} server did not answer within {self.timeout:.0f} s")
        return self.conn.recv()

    def call(self, *cmd):
        self.conn.send(cmd)
        status, value = self._recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def stop(self) -> None:
        try:
            if self.proc.is_alive():
                self.call("stop")
        except Exception:  # noqa: BLE001
            pass
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class ServerBackend:
    """One engine (local or ray) inside an EngineServer, seen as a benchmark backend."""

    def __init__(self, server: EngineServer, key: str, cfg_dict: dict):
        self.server, self.key = server, key
        self.build_seconds = server.call("build", key, cfg_dict)

    def train(self, t0: int, lrs: list[float]):
        return self.server.call("train", self.key, t0, list(lrs))

    def reset_peak(self) -> None:
        self.server.call("reset_peak", self.key)

    def memory(self) -> dict:
        return self.server.call("memory", self.key)

    def cpu(self) -> dict:
        return self.server.call("cpu", self.key)

    def close(self) -> None:
        self.server.call("close", self.key)


class GlooBackend:
    def __init__(self, cfg_dict: dict, threads: int = 1):
        from bench.gloo_peer import GlooPeer
        t = time.monotonic()
        self.peer = GlooPeer(cfg_dict, threads=threads)
        self.build_seconds = time.monotonic() - t

    def train(self, t0: int, lrs: list[float]):
        return self.peer.train(t0, lrs)

    def reset_peak(self) -> None:
        for pid in self.peer.pids:
            _clear_peak(pid)

    def memory(self) -> dict:
        return procs.summary(self.peer.pids)

    def cpu(self) -> dict:
        return {"cpu": procs.cpu_seconds(self.peer.pids)}

    def close(self) -> None:
        self.peer.close()
