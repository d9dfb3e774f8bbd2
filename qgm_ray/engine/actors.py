"""The Ray engine's workers: `ClientActor` (one block of k clients) and the `Evaluator`.

Both are plain classes (the engine wraps them with `ray.remote` when it creates them), so their
logic runs and is tested without Ray. Neither imports Ray: tensors arrive as numpy arrays that
Ray resolved from object refs passed as top-level arguments, and leave as numpy arrays that
Ray puts in the object store (read zero-copy by actors on the same node).

Exactness with the local engine rests on three things: blocks are built by the same factory
(`engine.assembly.build_block`, so same initial weights and sampler seeds) in the same layout
(`qgm_ray.layout`), each block mixes with the same `engine.base.block_mix` over the same
sources in the same order, and averages / losses are reduced in client order exactly as
`LocalEngine` does.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray import build, contracts, determinism
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine import allreduce, async_run, mailbox
from qgm_ray.engine.assembly import build_block
from qgm_ray.engine.async_ray import AsyncClient
from qgm_ray.engine.barriers import barriers_for
from qgm_ray.engine.base import block_mix, groups_of
from qgm_ray.engine.block import Block
from qgm_ray.engine.choco import Choco, reset
from qgm_ray.engine.evaluation import AveragedModel, average_rows, local_test_set
from qgm_ray.engine.exchange import wire_of
from qgm_ray.errors import ConfigError


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
        self.wire = wire_of(cfg)           # how payloads travel (engine/exchange.py)
        self.choco = Choco.of(cfg, len(self.ds.train_x))   # a compressed exchange (engine/choco.py), or None
        self.q: Optional[torch.Tensor] = None        # own compressed differences of the pending round (k, D)
        self.positions: list[int] = []     # topology index of each row (changes on resize)
        self.payload: Optional[torch.Tensor] = None  # own payloads of the pending round (k, D)
        self._test = None
        self._averaged: Optional[Evaluator] = None   # built on the first evaluation (actor 0 only)
        self.asynchronous: Optional[AsyncClient] = None   # clock.mode=async: this chunk's (engine/async_ray.py)
        self.fused: Optional[dict] = None               # this chunk's part in fused rounds (engine/fused.py)
        self.mailbox: Optional[mailbox.Mailbox] = None  # and its shared-memory outbox

    def reconfigure(self, *args) -> None:
        """The next run of a kept crew (engine/crew.py): this process, the state of a new actor."""
        self.__dict__.clear()
        self.__init__(*args)

    # ------------------------------------------------------------ membership
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
                self.block.exchange_state = async_run.fresh_state(self.block, self._async_history())
            for r, s in enumerate(slots):
                if s in kept and not states:
                    self.block.load_client_state(r, kept[s])
        for r, st in enumerate(states):
            self.block.load_client_state(r, st)
        self.positions = list(positions)
        self.payload = self.q = None
        self.asynchronous = None
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

    # ------------------------------------------------------------ one round
    def step(self, post: Optional[tuple], pre_lr: Optional[float], sources: Sequence[int], *received: np.ndarray,
             export: Optional[Sequence[int]] = None, t: Optional[int] = None,
             source_slots: Sequence[int] = ()):
        """post = (lr, rows): finish the previous round; rows[c] = (positions, weights) row c
        mixes, in order; `received` are the payloads of `sources` (positions held elsewhere),
        resolved by Ray from the refs the coordinator passed. pre_lr: start the next round and
        return the payloads of the positions in `export` (those another actor mixes next round;
        None: every row), one array each, in that order, followed by a small record (the
        record alone when nothing is exported: one return value, not a 1-tuple).
        A compressed run (engine/choco.py) also needs `t` (the round pre_lr starts; post
        finishes t - 1) and `source_slots` (the slots at `sources`, whose keys decode them);
        its payloads travel as the compressor's uint8 wire rows."""
        if post is not None:
            lr, rows = post
            if self.choco is None:
                mixed = block_mix(self.payload, self.positions, rows, sources, self.wire.decode(received))
            else:
                q_in = self.choco.decode(received, source_slots, t - 1, self.payload.shape[1])
                mixed = self.choco.receive(self.block.exchange_state, self.payload, self.q, self.positions, rows,
                                           sources, q_in)
            self.block.post_mix(mixed, lr)
            self.payload = self.q = None
        if pre_lr is None:
            return {"losses": []}
        self.payload = self.block.pre_mix(pre_lr)
        record = {"losses": self.block.losses.tolist()}   # one read of the device per round
        if export is None:
            rows = list(range(self.block.k))
        else:
            # Only what leaves the actor becomes an object: a ring of 8,192-client blocks
            # exports 2 rows each, not 8,192 (each return value is an object Ray tracks).
            row_of = {p: r for r, p in enumerate(self.positions)}
            rows = [row_of[p] for p in export]
        if self.choco is not None:
            self.q, wire = self.choco.send(self.block.exchange_state, self.payload, self.block.ids, t, rows)
            return (*wire, record) if rows else record
        if not rows:
            return record
        sent = self.payload if len(rows) == self.block.k else self.payload[rows]
        return (*self.wire.encode(sent), record)

    # ------------------------------------------------------------ fused rounds (engine/fused.py)
    def open_mailbox(self, prefix: str, me: int, plan: dict, start: int) -> Optional[str]:
        """This actor's part in fused rounds from round `start` (engine/fused.py `plans`) and its
        outbox (engine/mailbox.py). Every actor opens its own, then every actor attaches to its
        peers', then every actor unlinks its names, before any `rounds` call runs. Returns why
        it could not (no room in the node's shared memory), else None."""
        self.close_mailbox()
        try:
            self.mailbox = mailbox.open_for(prefix, me, plan, start)
        except OSError as e:
            return f"{os.path.dirname(prefix)}: {e.strerror or e}"
        self.fused = plan
        return None

    def close_mailbox(self) -> None:
        if self.mailbox is not None:
            self.mailbox.close()
        self.mailbox = self.fused = None

    def attach_mailbox(self) -> None:
        """Open the peers' outboxes (once every actor has opened its own)."""
        if self.mailbox is not None:
            self.mailbox.attach()

    def unlink_mailbox(self) -> None:
        """Remove this actor's outbox names (once every actor has attached): from here on a
        killed process leaves nothing in /dev/shm."""
        if self.mailbox is not None:
            self.mailbox.unlink()

    def rounds(self, t0: int, lrs: Sequence[float]) -> list[list[float]]:
        """Rounds t0 .. t0 + len(lrs) - 1, each whole (pre-mix, exchange, mix, post-mix), the
        payload rows other actors mix swapped through the mailbox; returns each round's losses
        in row order. The same operations on the same rows as a `step` per round."""
        box, plan = self.mailbox, self.fused
        if box is not None and box.broken:   # an earlier call of this chunk failed: the blocks are not where the peers are
            raise mailbox.PeerLost("an earlier call of this chunk failed")
        losses = []
        try:
            for i, lr in enumerate(lrs):
                t = t0 + i
                payload = self.block.pre_mix(lr)
                losses.append(self.block.losses.tolist())
                received = []
                if box is not None:
                    if plan["export"]:
                        box.publish(t, self.wire.host(payload[plan["export"]]))
                    received = self.wire.decode(box.received(t, plan["at"]))
                mixed = block_mix(payload, self.positions, plan["rows"], plan["sources"], received)
                if box is not None:
                    box.consumed(t)
                self.block.post_mix(mixed, lr)
        except BaseException:
            if box is not None:
                box.abort()
            raise
        return losses

    # ------------------------------------------------------------ one round of an all-reduce
    def step_mean(self, post_lr: Optional[float], pre_lr: Optional[float], mean: Optional[np.ndarray]):
        """`step` when every client mixes the mean of all payloads (engine/allreduce.py): finish
        the previous round with `mean` (resolved from the ref of `mean_of`), then return this
        round's partial sum of the block's payload rows (one (D,) array) and the record."""
        if post_lr is not None:
            self.block.post_mix(allreduce.spread(as_tensor(mean).to(self.block.device), self.block.k), post_lr)
        if pre_lr is None:
            return {"losses": []}
        partial = allreduce.block_sum(self.block.pre_mix(pre_lr))
        return partial.detach().to("cpu", torch.float32).numpy(), {"losses": self.block.losses.tolist()}

    def mean_of(self, n: int, *partials: np.ndarray) -> np.ndarray:
        """The mean of every block's partial sum, passed in block order (the first actor is the
        root of the all-reduce; every actor's next `step_mean` reads the result's ref)."""
        return allreduce.mean_of_partials([as_tensor(p) for p in partials], n).numpy()

    # ------------------------------------------------------------ asynchronous waves (engine/async_ray.py)
    def _async_history(self) -> int:
        """Payload versions each client keeps: the schedule's (a function of the config alone;
        asynchronous runs keep their clients, so n is the config's)."""
        n = self.cfg.topology.n_clients
        ex = async_run.exchange_for(self.cfg, self.block.algorithm, build.build_topology(self.cfg, n),
                                    groups_of(n, self.cfg.ray.clients_per_actor), self.block.payload_size,
                                    self.wire, len(self.ds.train_x))
        return async_run.history_of(ex.schedule)

    def async_history(self, positions: Sequence[int]):
        """The rings of these positions of the block (one array each; one return value for one)."""
        row_of = {p: r for r, p in enumerate(self.positions)}
        rings = AsyncClient.history_rows(self.block, [row_of[p] for p in positions])
        return rings[0] if len(rings) == 1 else tuple(rings)

    def async_begin(self, *rings: np.ndarray) -> None:
        """A chunk's start: copies of the in-neighbours' rings (`async_history` of their actors,
        in source order) and the pending gradients of a fresh run."""
        self.asynchronous = AsyncClient(self.block, [as_tensor(r) for r in rings])

    def async_wave(self, deliver: Sequence[tuple], post: Optional[dict], pre: Optional[dict], *received: np.ndarray):
        """Finish this block's events of the last wave and start those of this one; returns the
        rows other actors read, one array each, then the record (the record alone when none)."""
        out, record = self.asynchronous.wave(deliver, post, pre, [as_tensor(a) for a in received])
        if not out:
            return record
        return (*self.wire.encode(torch.stack(out)), record)

    # ------------------------------------------------------------ round barriers (engine/barriers.py)
    def barrier_gather(self, i: int):
        """Barrier i's contribution of this block, after its post-mix, as numpy arrays."""
        return _to_numpy(self.barriers[i].gather(self.block))

    def barrier_reduce(self, i: int, *parts):
        """Barrier i's reduction of every actor's `barrier_gather`, passed in position order."""
        return _to_numpy(self.barriers[i].reduce([_to_torch(p) for p in parts]))

    def barrier_apply(self, i: int, lr: float, reduced) -> None:
        self.barriers[i].apply(self.block, _to_torch(reduced), lr)

    def joiner_states(self) -> list:
        """What each barrier keeps for the run, read from this block: elastic joiners adopt it."""
        return [b.joiner_state(self.block) for b in self.barriers]

    # ------------------------------------------------------------ evaluation / checkpoints
    def params(self) -> tuple:
        """(k x P params, k x B float buffers[, k push-sum weights on a directed graph]) of the
        clients, in row order."""
        out = (self.block.params.detach().cpu().numpy(), self.block.flat_buffers().cpu().numpy())
        if self.block.push_sum:
            out += (self.block.weight.detach().cpu().numpy(),)
        return out

    def local_accuracies(self, batch_size: int, n_clients: int) -> list[float]:
        x, y = local_test_set(*self._test_set(), n_clients, self.cfg.seed)
        return self.block.evaluate_rows(x, y, batch_size)

    def evaluate_average(self, *per_actor: tuple) -> dict:
        """The averaged model of every client (params from every actor's `params` ref): the
        coordinator asks the first ClientActor, which holds the test set on its device already."""
        out = self._evaluator().evaluate_arrays(*per_actor)
        out["evaluator_pid"] = os.getpid()
        return out

    def average(self, *per_actor: tuple) -> tuple[np.ndarray, np.ndarray]:
        return self._evaluator().average(*per_actor)

    def _evaluator(self) -> "Evaluator":
        if self._averaged is None:
            self._averaged = Evaluator(self.cfg, self.ds, self.device, self._test_set())
        return self._averaged

    def _test_set(self):
        if self._test is None:
            self._test = (self.ds.test_x.to(self.device), self.ds.test_y.to(self.device))
        return self._test

    def state_dicts(self) -> list[dict]:
        return self.block.client_states()

    def load_state_dicts(self, states: list[dict]) -> None:
        for r, s in enumerate(states):
            self.block.load_client_state(r, s)
        self.payload = self.q = None
        self.asynchronous = None

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True

    def deterministic(self) -> tuple[bool, Optional[str]]:
        """(deterministic algorithms on, CUBLAS_WORKSPACE_CONFIG) in this process."""
        return torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")


def _to_numpy(value):
    """CPU tensors (in tuples / lists, None kept) -> numpy arrays over the same memory."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_numpy(v) for v in value)
    return value


def _to_torch(value):
    """The inverse of `_to_numpy`, zero-copy."""
    if isinstance(value, np.ndarray):
        return as_tensor(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_torch(v) for v in value)
    return value


# ------------------------------------------------------------------ the averaged model
# Evaluated inside the first ClientActor: a process that lives as long as the run, has torch
# imported, the test set and (on a GPU) a CUDA context already. A Ray task would land on a
# freshly started worker that imports torch again (and on a GPU pays a new CUDA context); a
# separate evaluator actor would be one more torch process (docs/results/processes). It reads
# the clients' parameters from the refs the ClientActors returned, so neither the coordinator
# nor the driver handles a tensor; if its actor dies, the run recovers as from any dead actor.


def _stack(per_actor: Sequence[tuple]) -> tuple:
    """(params, buffers, push-sum weights or None) of every client, in position order."""
    params = torch.cat([as_tensor(a[0]) for a in per_actor])
    buffers = torch.cat([as_tensor(a[1]) for a in per_actor])
    weights = torch.cat([as_tensor(a[2]) for a in per_actor]) if len(per_actor[0]) > 2 else None
    return params, buffers, weights


class Evaluator(AveragedModel):
    """The averaged model of a Ray run, fed from every actor's `params` arrays."""

    def average(self, *per_actor: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(params, buffers) of the clients' average: what elastic joiners start from."""
        p, b = average_rows(*_stack(per_actor))
        return p.numpy(), b.numpy()

    def evaluate_arrays(self, *per_actor: tuple) -> dict:
        return self.evaluate(*_stack(per_actor))
