"""In-process engine: all clients in one process; the exchange mixes each client's
in-neighbours' payloads with `engine.base.mix` (the function the Ray engine uses too).

It is the reference the Ray engine is checked against and the fast path for tests and small
sweeps.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import torch

from qgm_ray import build
from qgm_ray.client import Client, evaluate_model, flat_buffers, load_params
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.base import consensus_distance, groups_of, mix, mix_sources, mixing_matrix
from qgm_ray.engine.packed import PackedClients, should_pack


class LocalEngine:
    def __init__(self, cfg: Config, ds: Dataset, parts: list, device: str = "cpu"):
        self.cfg, self.ds, self.parts, self.device = cfg, ds, parts, device
        # The intra-op threads of a ClientActor (ray.torch_threads, default 1). Another thread
        # count splits conv / matmul reductions differently: the engines would then agree to
        # ~1e-7 per round only and drift apart over a long run. For these small models extra
        # threads mostly spin anyway (2 threads: ~30x slower on a busy 2-core machine).
        torch.set_num_threads(cfg.ray.torch_threads)
        self.n_clients = cfg.topology.n_clients
        self.topology = build.build_topology(cfg, self.n_clients)
        # Elastic runs cut max_clients shards; slot i of `self.slots` says which shard client i holds.
        self.slots = list(range(self.n_clients))
        self.clients: list[Client] = [build.build_client(cfg, ds, parts[s], s, device) for s in self.slots]
        self.k = local_clients_per_actor(cfg, device)
        self._pack()
        self.centralized = self.clients[0].algorithm.centralized
        self.eval_model = build.build_model(cfg, ds).to(device)
        self.test_x, self.test_y = ds.test_x.to(device), ds.test_y.to(device)

    @property
    def payload_bytes(self) -> int:
        return self.clients[0].algorithm.payload_size(self.clients[0].num_params) * 4

    def train(self, rounds: range, lr_of: Callable[[int], float],
              on_round: Optional[Callable[[int, float], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> list[float]:
        losses = []
        for t in rounds:
            if should_stop is not None and should_stop():
                break
            lr = lr_of(t)
            payloads = self._pre_mix(lr)
            w = mixing_matrix(self.topology, self.centralized, self.n_clients, t)
            # Every client mixes before any post_mix: a payload may alias its sender's state.
            mixed = []
            for i in range(self.n_clients):
                src = mix_sources(w[i])
                mixed.append(mix(w[i, src], [payloads[j] for j in src]))
            for c, m in zip(self.clients, mixed):
                c.post_mix(m, lr)
            loss = float(np.mean([c.last_loss for c in self.clients]))
            losses.append(loss)
            if on_round is not None:
                on_round(t, loss)
        return losses

    def _pack(self) -> None:
        """Pack the clients in the blocks a ClientActor would hold (`ray.pack_clients`): vmap
        sums in another order than separate clients, so packing the same blocks as the Ray
        engine keeps the two engines bit-identical (and the local engine gets vmap's speed-up)."""
        self.packs = []
        for g in groups_of(self.n_clients, self.k):
            members = [self.clients[i] for i in g]
            self.packs.append((g, PackedClients(members) if should_pack(self.cfg.ray.pack_clients, members) else None))

    def _pre_mix(self, lr: float) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for g, packed in self.packs:
            out += list(packed.pre_mix(lr)) if packed is not None else [self.clients[i].pre_mix(lr) for i in g]
        return out

    def averaged_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        params = torch.stack([c.params for c in self.clients]).mean(0)
        bufs = [flat_buffers(c.model) for c in self.clients]
        buffers = torch.stack(bufs).mean(0) if bufs[0].numel() else bufs[0]
        return params, buffers

    def evaluate(self) -> dict:
        bs = self.cfg.eval.batch_size
        stacked = torch.stack([c.params for c in self.clients])
        params, buffers = self.averaged_params()
        load_params(self.eval_model, params, buffers)
        acc, loss = evaluate_model(self.eval_model, self.test_x, self.test_y, bs)
        out = {"test_accuracy": acc, "test_loss": loss, "consensus_distance": consensus_distance(stacked)}
        if self.cfg.eval.local_models:
            out["local_test_accuracy"] = float(np.mean([c.evaluate(self.test_x, self.test_y, bs)[0]
                                                        for c in self.clients]))
        else:
            out["local_test_accuracy"] = float("nan")
        return out

    def state_dict(self) -> dict:
        return {"slots": list(self.slots), "clients": [c.state_dict() for c in self.clients]}

    def load_state_dict(self, state: dict) -> None:
        if list(state["slots"]) != self.slots:
            self._set_slots(list(state["slots"]))
        for c, s in zip(self.clients, state["clients"]):
            c.load_state_dict(s)

    def _set_slots(self, slots: list[int]) -> None:
        by_slot = {s: c for s, c in zip(self.slots, self.clients)}
        self.clients = [by_slot.get(s) or build.build_client(self.cfg, self.ds, self.parts[s], s, self.device)
                        for s in slots]
        self.slots = slots
        self.n_clients = len(slots)
        self.topology = build.build_topology(self.cfg, self.n_clients)
        self._pack()

    def resize(self, n_clients: int, at_round: int) -> None:
        """Elastic: leavers release their shard; joiners take free shards, start from the
        current average model with fresh optimizer state."""
        if n_clients == self.n_clients:
            return
        avg, bufs = self.averaged_params()
        if n_clients < self.n_clients:
            slots = self.slots[:n_clients]
        else:
            free = [s for s in range(len(self.parts)) if s not in self.slots]
            slots = self.slots + free[:n_clients - self.n_clients]
        old = set(self.slots)
        self._set_slots(slots)
        for s, c in zip(self.slots, self.clients):
            if s not in old:
                c.reset(avg, bufs)

    def close(self) -> None:
        pass


def local_clients_per_actor(cfg: Config, device: str) -> int:
    """The k a Ray engine started on this machine would use: what `ray.clients_per_actor: auto`
    resolves to for a local Ray (ray.num_cpus or the machine's cores; its GPUs if on CUDA)."""
    from qgm_ray.engine.ray_setup import resolve_clients_per_actor

    n_max = build.max_clients(cfg)
    gpus = torch.cuda.device_count() if str(device).startswith("cuda") else 0
    cluster = {"CPU": float(cfg.ray.num_cpus or os.cpu_count() or 1), "GPU": float(gpus)}
    return resolve_clients_per_actor(cfg, n_max, cluster).ray.clients_per_actor
