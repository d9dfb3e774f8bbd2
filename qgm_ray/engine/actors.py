"""The Ray engine's worker: `ClientActor`, one block of k clients, answering the coordinator.

A plain class (the engine wraps it with `ray.remote` when it creates it), so its logic runs and
is tested without Ray. It does not import Ray: tensors arrive as numpy arrays that Ray resolved
from object refs passed as top-level arguments, and leave as numpy arrays that Ray puts in the
object store (read zero-copy by actors on the same node; engine/arrays.py).

Its methods are the API the coordinator calls by name; each kind of work is the module of its
topic: a round per call (engine/round_calls.py), fused rounds (engine/fused_actor.py),
asynchronous waves (engine/async_ray.py), round barriers (engine/barriers.py), evaluation
(engine/actor_evaluation.py).

Exactness with the local engine rests on three things: blocks are built by the same factory
(`engine.assembly.build_block`, so same initial weights and sampler seeds) in the same layout
(`qgm_ray.layout`), each block mixes with the same `engine.base.block_mix` over the same
sources in the same order, and averages / losses are reduced in client order exactly as
`LocalEngine` does.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray import contracts, determinism
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.actor_evaluation import ActorEvaluation, block_arrays
from qgm_ray.engine.arrays import as_tensor, to_numpy, to_torch
from qgm_ray.engine.assembly import build_block
from qgm_ray.engine.async_ray import AsyncClient, fresh_rings
from qgm_ray.engine.barriers import barriers_for
from qgm_ray.engine.block import Block
from qgm_ray.engine.choco import Choco, reset
from qgm_ray.engine.wire import wire_of
from qgm_ray.engine.fused_actor import FusedPart
from qgm_ray.engine.round_calls import RoundCalls, mean_of
from qgm_ray.errors import ConfigError


def dataset_from_arrays(meta: dict, train_x: np.ndarray, train_y: np.ndarray,
                        test_x: np.ndarray, test_y: np.ndarray) -> Dataset:
    """A Dataset whose tensors are views of the shared arrays (no copy until a client slices
    its partition out of them)."""
    return Dataset(train_x=as_tensor(train_x), train_y=as_tensor(train_y), test_x=as_tensor(test_x),
                   test_y=as_tensor(test_y), **meta)


def dataset_meta(ds: Dataset) -> dict:
    # norm travels with the arrays: uint8 pixels in the object store, normalised per batch
    return {"name": ds.name, "num_classes": ds.num_classes, "input_shape": tuple(ds.input_shape),
            "augment": ds.augment, "fill": ds.fill, "norm": ds.norm}


def _device(num_gpus: float) -> str:
    # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU(s): "cuda" is the GPU Ray assigned.
    return "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"


def expect_lost_payloads() -> None:
    """After a failure a Ray process of a run drops refs to calls that failed because a payload
    was lost; those errors are expected and handled (EngineFailure on the driver), not
    "unhandled". Ray reads the variable when such an error surfaces, so each actor sets it for
    itself (no runtime_env, whose workers start slower: engine/ray_engine.py)."""
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"


class ClientActor:
    """One block of k decentralized clients in one process. One `step` call per round does the
    post-mix of the previous round and the pre-mix of this one, so a round costs one actor call."""

    def __init__(self, cfg: Config, meta: dict, parts: list, num_gpus: float,
                 train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray):
        expect_lost_payloads()
        determinism.apply(cfg)
        torch.set_num_threads(cfg.compute.torch_threads)
        self.cfg, self.parts = cfg, parts
        self.device = _device(num_gpus)
        # The GPU fraction this actor's block may plan to use: 1 / actors per GPU (Ray keeps 4
        # decimals of a fraction, so round back to the whole number of actors sharing it).
        self.gpu_share = 1.0 / round(1.0 / num_gpus) if 0 < num_gpus < 1 else 1.0
        self.ds = dataset_from_arrays(meta, train_x, train_y, test_x, test_y)
        self.block: Optional[Block] = None
        self.barriers: list = []           # engine/barriers.py's, for the block's algorithm
        self.wire = wire_of(cfg)           # how payloads travel (engine/wire.py)
        self.choco = Choco.of(cfg, len(self.ds.train_x))   # a compressed exchange (engine/choco.py), or None
        self.positions: list[int] = []     # topology index of each row (changes on resize)
        self.evaluation = ActorEvaluation(cfg, self.ds, self.device)
        self.per_round: Optional[RoundCalls] = None       # the pending round of a call per round (engine/round_calls.py)
        self.asynchronous: Optional[AsyncClient] = None   # clock.mode=async: this chunk's (engine/async_ray.py)
        self.fused: Optional[FusedPart] = None            # this chunk's part in fused rounds (engine/fused_actor.py)

    def reconfigure(self, *args) -> None:
        """The next run of a kept crew (engine/crew.py): this process, the state of a new actor."""
        self.__dict__.clear()
        self.__init__(*args)

    def set_clients(self, slots: Sequence[int], positions: Sequence[int], *states: dict) -> int:
        """Hold exactly these shards (slots) at these topology positions; clients that stay keep
        their state, the others are built; `states` (none, or one per slot, resolved from refs)
        restores them. The block is rebuilt when its clients change (same as LocalEngine)."""
        slots = list(slots)
        if self.block is None or self.block.ids != slots:
            kept = {s["id"]: s for s in self.block.client_states()} if self.block is not None else {}
            try:
                self.block = build_block(self.cfg, self.ds, self.parts, slots, self.device, gpu_share=self.gpu_share)
            except ConfigError as e:   # a plug-in's one line, which Ray would wrap in this actor's traceback
                raise contracts.crossing_ray(e) from None
            self.barriers = barriers_for(self.block.algorithm)
            if self.cfg.clock.mode == "async":   # the rows an asynchronous run carries, before any state loads
                self.block.exchange_state = fresh_rings(self.cfg, self.block, self.wire, len(self.ds.train_x))
            for r, s in enumerate(slots):
                if s in kept and not states:
                    self.block.load_client_state(r, kept[s])
        for r, st in enumerate(states):
            self.block.load_client_state(r, st)
        self.positions = list(positions)
        self._forget_pending()
        self.close_mailbox()
        return self.num_params()

    def reset_clients(self, slots: Sequence[int], average: tuple, kept: Optional[list] = None) -> None:
        """Elastic joiners: start from the given (average) model with fresh optimizer state
        (and what each barrier keeps for the run: `kept`, from `joiner_states`)."""
        params, buffers = as_tensor(average[0]), as_tensor(average[1])
        rows = [r for r, s in enumerate(self.block.ids) if s in slots]
        self.block.reset_rows(rows, params, buffers)
        for barrier, state in zip(self.barriers, kept or []):
            barrier.adopt(self.block, rows, state)

    def reset_exchange(self) -> None:
        """W changed (a resize): every client's public copies restart at zero (engine/choco.py)."""
        reset([self.block])

    def num_params(self) -> int:
        return self.block.num_params if self.block is not None else 0

    def _forget_pending(self) -> None:
        """No round or wave is started: what the next call finishes comes from a new start."""
        self.per_round = RoundCalls(self.block, self.positions, self.wire, self.choco)
        self.asynchronous = None

    def step(self, post: Optional[tuple], pre_lr: Optional[float], sources: Sequence[int], *received: np.ndarray,
             export: Optional[Sequence[int]] = None, t: Optional[int] = None,
             source_slots: Sequence[int] = ()):
        """Finish the previous round and start the next one (engine/round_calls.py `step`)."""
        return self.per_round.step(post, pre_lr, sources, received, export=export, t=t, source_slots=source_slots)

    def open_mailbox(self, prefix: str, me: int, plan: dict, start: int) -> Optional[str]:
        """This actor's part in fused rounds from round `start`, or why not (engine/fused_actor.py)."""
        self.close_mailbox()
        part = FusedPart.open(prefix, me, plan, start)
        if isinstance(part, str):
            return part
        self.fused = part
        return None

    def close_mailbox(self) -> None:
        """Close this actor's part in fused rounds, if it has one."""
        if self.fused is not None:
            self.fused.close()
        self.fused = None

    def attach_mailbox(self) -> None:
        """Open the peers' outboxes (once every actor has opened its own)."""
        if self.fused is not None:
            self.fused.attach()

    def unlink_mailbox(self) -> None:
        """Remove this actor's outbox names (once every actor has attached)."""
        if self.fused is not None:
            self.fused.unlink()

    def rounds(self, t0: int, lrs: Sequence[float]) -> list[list[float]]:
        """Rounds t0 .. t0 + len(lrs) - 1, fused; each round's losses in row order (engine/fused_actor.py)."""
        return self.fused.rounds(self.block, self.positions, self.wire, t0, lrs)

    def step_mean(self, post_lr: Optional[float], pre_lr: Optional[float], mean: Optional[np.ndarray]):
        """`step` of an all-reduce round (engine/round_calls.py `step_mean`)."""
        return self.per_round.step_mean(post_lr, pre_lr, mean)

    def mean_of(self, n: int, *partials: np.ndarray) -> np.ndarray:
        """The all-reduce's mean of every block's partial sum (engine/round_calls.py `mean_of`)."""
        return mean_of(n, partials)

    def async_history(self, positions: Sequence[int]):
        """The rings of these positions of the block (one array each; one return value for one)."""
        row_of = {p: r for r, p in enumerate(self.positions)}
        rings = AsyncClient.history_rows(self.block, [row_of[p] for p in positions])
        return rings[0] if len(rings) == 1 else tuple(rings)

    def async_begin(self, *rings: np.ndarray) -> None:
        """A chunk's start: the in-neighbours' rings, in source order (engine/async_ray.py `AsyncClient`)."""
        self.asynchronous = AsyncClient(self.block, [as_tensor(r) for r in rings])

    def async_wave(self, deliver: Sequence[tuple], post: Optional[dict], pre: Optional[dict], *received: np.ndarray):
        """A wave's call: rows others read, then the record (alone if none; engine/async_ray.py `AsyncClient.wave`)."""
        out, record = self.asynchronous.wave(deliver, post, pre, [as_tensor(a) for a in received])
        if not out:
            return record
        return (*self.wire.encode(torch.stack(out)), record)

    def barrier_gather(self, i: int):
        """Barrier i's contribution of this block, after its post-mix, as numpy arrays."""
        return to_numpy(self.barriers[i].gather(self.block))

    def barrier_reduce(self, i: int, *parts):
        """Barrier i's reduction of every actor's `barrier_gather`, passed in position order."""
        return to_numpy(self.barriers[i].reduce([to_torch(p) for p in parts]))

    def barrier_apply(self, i: int, lr: float, reduced) -> None:
        """Barrier i's reduction applied to this block, with the round's lr."""
        self.barriers[i].apply(self.block, to_torch(reduced), lr)

    def joiner_states(self) -> list:
        """What each barrier keeps for the run, read from this block: elastic joiners adopt it."""
        return [b.joiner_state(self.block) for b in self.barriers]

    def params(self) -> tuple:
        """The clients' params, buffers[, push-sum weights] (engine/actor_evaluation.py `block_arrays`)."""
        return block_arrays(self.block)

    def local_accuracies(self, batch_size: int, n_clients: int) -> list[float]:
        """Test accuracy of each client's own model, in row order."""
        return self.evaluation.local_accuracies(self.block, batch_size, n_clients)

    def evaluate_average(self, *per_actor: tuple) -> dict:
        """The averaged model of every client (from every actor's `params`), asked of the first actor."""
        return self.evaluation.evaluate_average(per_actor)

    def average(self, *per_actor: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(params, buffers) of the clients' average (from every actor's `params`)."""
        return self.evaluation.average(per_actor)

    def state_dicts(self) -> list[dict]:
        """Each client's checkpoint, in row order."""
        return self.block.client_states()

    def load_state_dicts(self, states: list[dict]) -> None:
        """Restore every client from its checkpoint, in row order."""
        for r, s in enumerate(states):
            self.block.load_client_state(r, s)
        self._forget_pending()

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True

    def deterministic(self) -> tuple[bool, Optional[str]]:
        """(deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG) in this process."""
        return torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
