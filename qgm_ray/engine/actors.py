"""The Ray engine's workers: `ClientActor` (k clients each) and the averaged-model tasks.

Both are plain classes (the engine wraps them with `ray.remote` when it creates them), so their
logic runs and is tested without Ray. Neither imports Ray: tensors arrive as numpy arrays that
Ray resolved from object refs passed as top-level arguments, and leave as numpy arrays that
Ray puts in the object store (read zero-copy by actors on the same node).

Exactness with the local engine rests on three things: clients are built by the same
factory (`build.build_client`, so same initial weights and sampler seeds), the exchange uses
the same `engine.base.mix` over the same sources in the same order, and averages / losses
are reduced in client order exactly as `LocalEngine` does.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray import build
from qgm_ray.client import Client, evaluate_model, flat_buffers, load_params
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.base import consensus_distance, mix
from qgm_ray.engine.packed import PackedClients, should_pack


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor over an object-store array. Those arrays are read-only; nothing here
    writes to them (mix reads, load/copy_ reads), so torch's not-writable warning is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def dataset_from_arrays(meta: dict, train_x: np.ndarray, train_y: np.ndarray,
                        test_x: np.ndarray, test_y: np.ndarray) -> Dataset:
    """A Dataset whose tensors are views of the shared arrays (no copy until a client slices
    its partition out of them)."""
    return Dataset(train_x=as_tensor(train_x), train_y=as_tensor(train_y), test_x=as_tensor(test_x),
                   test_y=as_tensor(test_y), **meta)


def dataset_meta(ds: Dataset) -> dict:
    return {"name": ds.name, "num_classes": ds.num_classes, "input_shape": tuple(ds.input_shape),
            "augment": ds.augment, "fill": ds.fill}


def _device(num_gpus: float) -> str:
    # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU(s): "cuda" is the GPU Ray assigned.
    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


class ClientActor:
    """k decentralized clients in one process. One `step` call per round does the post-mix of
    the previous round and the pre-mix of this one, so a round costs one actor call."""

    def __init__(self, cfg: Config, meta: dict, parts: list, num_gpus: float,
                 train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray):
        torch.set_num_threads(cfg.ray.torch_threads)
        self.cfg, self.parts = cfg, parts
        self.device = _device(num_gpus)
        self.ds = dataset_from_arrays(meta, train_x, train_y, test_x, test_y)
        self.clients: list[Client] = []
        self.positions: list[int] = []     # topology index of each client (changes on resize)
        self.payloads: dict[int, torch.Tensor] = {}  # position -> own payload of the pending round
        self.packed: Optional[PackedClients] = None  # the clients stepped as one (ray.pack_clients)
        self._test = None

    # ------------------------------------------------------------ membership
    def set_clients(self, slots: Sequence[int], positions: Sequence[int], *states: dict) -> int:
        """Hold exactly these shards (slots) at these topology positions; keep clients that
        stay, build the others; `states` (none, or one per slot, resolved from refs) restores them."""
        by_slot = {c.id: c for c in self.clients}
        self.clients = [by_slot.get(s) or build.build_client(self.cfg, self.ds, self.parts[s], s, self.device)
                        for s in slots]
        self.positions = list(positions)
        self.payloads = {}
        for c, st in zip(self.clients, states):
            c.load_state_dict(st)
        # Re-packed on every membership change: the stacked matrices hold exactly these clients.
        self.packed = PackedClients(self.clients) if should_pack(self.cfg.ray.pack_clients, self.clients) else None
        return self.num_params()

    def reset_clients(self, slots: Sequence[int], average: tuple) -> None:
        """Elastic joiners: start from the given (average) model with fresh optimizer state."""
        params, buffers = as_tensor(average[0]), as_tensor(average[1])
        for c in self.clients:
            if c.id in slots:
                c.reset(params, buffers)

    def num_params(self) -> int:
        return self.clients[0].num_params if self.clients else 0

    # ------------------------------------------------------------ one round
    def step(self, post: Optional[tuple], pre_lr: Optional[float], sources: Sequence[int], *received: np.ndarray):
        """post = (lr, rows): finish the previous round; rows[c] = (positions, weights) client c
        mixes, in order; `received` are the payloads of `sources` (positions held elsewhere),
        resolved by Ray from the refs the coordinator passed. pre_lr: start the next round and
        return its payloads (one float32 array per client) followed by a small record."""
        if post is not None:
            lr, rows = post
            have = dict(self.payloads)
            for j, arr in zip(sources, received):
                have[j] = as_tensor(arr).to(self.device)
            mixed = [mix(weights, [have[j] for j in src]) for src, weights in rows]
            for c, m in zip(self.clients, mixed):
                c.post_mix(m, lr)
            self.payloads = {}
        if pre_lr is None:
            return {"losses": []}
        out = []
        payloads = (self.packed.pre_mix(pre_lr) if self.packed is not None
                    else [c.pre_mix(pre_lr) for c in self.clients])
        for pos, p in zip(self.positions, payloads):
            self.payloads[pos] = p
            out.append(np.ascontiguousarray(p.detach().cpu().numpy(), dtype=np.float32))
        record = {"losses": [c.last_loss for c in self.clients]}
        return (*out, record) if len(out) > 0 else record

    # ------------------------------------------------------------ evaluation / checkpoints
    def params(self) -> tuple[np.ndarray, np.ndarray]:
        """(k x P params, k x B float buffers) of the clients, in client order."""
        p = torch.stack([c.params.detach() for c in self.clients]).cpu().numpy()
        b = torch.stack([flat_buffers(c.model) for c in self.clients]).cpu().numpy()
        return p, b

    def local_accuracies(self, batch_size: int) -> list[float]:
        x, y = self._test_set()
        return [c.evaluate(x, y, batch_size)[0] for c in self.clients]

    def _test_set(self):
        if self._test is None:
            self._test = (self.ds.test_x.to(self.device), self.ds.test_y.to(self.device))
        return self._test

    def state_dicts(self) -> list[dict]:
        return [c.state_dict() for c in self.clients]

    def load_state_dicts(self, states: list[dict]) -> None:
        for c, s in zip(self.clients, states):
            c.load_state_dict(s)
        self.payloads = {}

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True


# ------------------------------------------------------------------ the averaged model
# Ray tasks rather than an actor: they run on Ray's pooled workers (which keep torch imported
# from one call to the next), hold nothing between evaluations and need no repair when a
# node dies. They read the clients' parameters from the refs the ClientActors returned, so
# neither the coordinator nor the driver handles a tensor.


def _stack(per_actor: Sequence[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    params = torch.cat([as_tensor(p) for p, _ in per_actor])
    buffers = torch.cat([as_tensor(b) for _, b in per_actor])
    return params, buffers


def _average(params: torch.Tensor, buffers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The reductions of LocalEngine.averaged_params: the mean over the stacked rows.
    return params.mean(0), (buffers.mean(0) if buffers.shape[1] else buffers[0])


def average_models(*per_actor: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(params, buffers) of the clients' average: what elastic joiners start from."""
    p, b = _average(*_stack(per_actor))
    return p.numpy(), b.numpy()


def evaluate_average(cfg: Config, meta: dict, num_gpus: float, test_x: np.ndarray, test_y: np.ndarray,
                     *per_actor: tuple) -> dict:
    """Test accuracy / loss of the averaged model and the consensus distance."""
    torch.set_num_threads(cfg.ray.torch_threads)
    device = _device(num_gpus)
    ds = Dataset(name=meta["name"], train_x=torch.zeros(0), train_y=torch.zeros(0, dtype=torch.long),
                 test_x=as_tensor(test_x), test_y=as_tensor(test_y), num_classes=meta["num_classes"],
                 input_shape=meta["input_shape"])
    stacked, buffers = _stack(per_actor)
    params, bufs = _average(stacked, buffers)
    model = build.build_model(cfg, ds).to(device)
    load_params(model, params.to(device), bufs.to(device))
    acc, loss = evaluate_model(model, ds.test_x.to(device), ds.test_y.to(device), cfg.eval.batch_size)
    return {"test_accuracy": acc, "test_loss": loss, "consensus_distance": consensus_distance(stacked)}
