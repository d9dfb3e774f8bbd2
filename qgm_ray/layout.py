"""How the clients group into blocks: computed once from the config and the resources, read by
both engines (pure functions; no Ray, no torch).

A block is k consecutive topology positions stepped as one program (engine/block.py); the Ray
engine puts one block in each ClientActor, the local engine holds the same blocks in one
process. Using the same blocks is what keeps the two engines bit-identical: the same rows are
summed in the same order. Which Ray node an actor lands on is engine/placement.py's business.

`ray.clients_per_actor: auto` gives one block per GPU when the clients get GPUs (explicit
`ray.gpus_per_client` g: 1/g clients fill a GPU), else one per CPU core: on CPU, more actors
than cores buy no parallelism, and each costs a torch process's memory and slows the rounds
(docs/results/bench).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass


def auto_clients_per_actor(n_max: int, cpus: float, gpus: float, gpus_per_client) -> int:
    """k for `ray.clients_per_actor: auto` on a cluster with these CPUs and GPUs."""
    if gpus_per_client == "auto" and gpus >= 1:
        return math.ceil(n_max / int(gpus))
    if gpus_per_client != "auto" and gpus_per_client > 0:
        return max(1, int(1 / gpus_per_client + 1e-9)) if gpus_per_client < 1 else 1
    return math.ceil(n_max / max(1, int(cpus)))


MAX_ACTORS_PER_CORE = 4


def actor_cpus(cfg, k: int, n_actors: int, cpus: float) -> float:
    """CPUs one ClientActor of k clients asks Ray for, when `n_actors` of them share `cpus`.

    A block needs the cores its threads use (compute.torch_threads), whatever its k. Where the
    actors would not fit that way (an explicit ray.clients_per_actor above what auto picks, or
    a Tune trial that keeps part of the cluster for its own process), `auto` lets m actors share
    each core: 1/m of a CPU with m = ceil(actors / whole cores). With whole-CPU nodes that always
    packs, node by node (a node of c cores takes c*m actors; an even share of the total, e.g.
    5/7, could not fill a 3-core node with 4 of them). An explicit ray.cpus_per_actor or
    ray.cpus_per_client is taken as given: ray_setup.plan_resources refuses what cannot fit."""
    r = cfg.ray
    if r.cpus_per_client is not None:
        return float(r.cpus_per_client) * k
    if r.cpus_per_actor != "auto":
        return float(r.cpus_per_actor)
    want = float(cfg.compute.torch_threads)
    if n_actors * want <= cpus + 1e-9 or cpus <= 0:
        return want
    if cpus >= 1:
        share = 1.0 / math.ceil(n_actors / math.floor(cpus + 1e-9))
    else:
        share = cpus / n_actors
    # Never more than MAX_ACTORS_PER_CORE actors on a core: each is a torch process, so 64
    # one-client actors on 2 cores would be 64 processes. Past that the plan does not fit and
    # ray_setup.plan_resources says which CPUs are missing (clients_per_actor: auto always fits).
    share = max(share, 1.0 / MAX_ACTORS_PER_CORE)
    return min(want, math.floor(share * 1e4) / 1e4)   # Ray keeps 4 decimals: never round up


def clients_per_block(cfg, n_max: int, resources: dict) -> int:
    """ray.clients_per_actor as a number: the configured one, or auto for these resources
    ({"CPU": cores, "GPU": gpus}, as Ray's cluster_resources names them)."""
    if cfg.ray.clients_per_actor != "auto":
        return int(cfg.ray.clients_per_actor)
    return auto_clients_per_actor(n_max, resources.get("CPU", 1.0), resources.get("GPU", 0.0),
                                  cfg.ray.gpus_per_client)


def with_clients_per_block(cfg, k: int):
    """`cfg` with ray.clients_per_actor set to k (what every process downstream reads)."""
    return dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, clients_per_actor=k))


def machine_resources(cfg, device: str, cuda_devices: int = 0) -> dict:
    """The resources a local Ray started by this run would have: ray.num_cpus or the machine's
    cores, and its GPUs when the run is on CUDA. The local engine lays its blocks out for these,
    so that it holds the blocks a Ray run on this machine would."""
    cpus = float(cfg.ray.num_cpus or os.cpu_count() or 1)
    gpus = float(cuda_devices) if str(device).startswith("cuda") else 0.0
    return {"CPU": cpus, "GPU": gpus}


@dataclass(frozen=True)
class Layout:
    k: int          # clients per block (and per ClientActor)
    device: str     # where the blocks compute: "cpu" or "cuda"

    def groups(self, n: int) -> list[list[int]]:
        """Topology positions of each block for n clients: consecutive runs of k."""
        return [list(range(a, min(a + self.k, n))) for a in range(0, n, self.k)]

    def block_of(self, n: int) -> dict[int, tuple[int, int]]:
        """position -> (block index, row in that block)."""
        return {p: (b, r) for b, g in enumerate(self.groups(n)) for r, p in enumerate(g)}


def max_clients(cfg) -> int:
    """The most clients the run holds at once: n_clients or the elastic schedule's largest."""
    return max([cfg.topology.n_clients] + [n for _, n in cfg.elastic.schedule])


def plan(cfg, resources: dict, device: str) -> Layout:
    """The layout of this run for these resources. `cfg.ray.clients_per_actor` may be auto."""
    return Layout(k=clients_per_block(cfg, max_clients(cfg), resources), device=str(device))
