"""An asynchronous run on the local engine's blocks (`clock.mode: async`): the events of
qgm_ray/async_schedule.py executed wave by wave.

One event of client i (its step m) is, atomically:

    payload = rule.pre_mix(state_i, x_i, g_i, lr)
    gossip:   mixed = sum_j W_ij * version v_j of j's payload (its own: this payload)
    pairwise: mixed = (payload + x_p) / 2;  x_p <- mixed     (AD-PSGD, the peer p drawn by the schedule)
    x_i = rule.post_mix(state_i, x_i, mixed, lr)
    g_i, loss_i = the gradient and loss of step m + 1 on x_i as it is now

so a step's gradient is taken on the model the client holds when the step starts (right after
its previous one), even where an AD-PSGD peer changes that model before the step ends; a
fresh run takes every client's step-0 gradient first. A wave's events touch disjoint clients
and none reads what another of its wave writes, so each block steps its active rows as one
gathered batch (`Block.row_gradients`, the rule on the gathered rows of its state) and the
numbers of a client do not depend on how the waves are cut.

Gossip keeps each client's last `schedule.history` payloads in a ring (version v in slot
v mod history; the initial model in every slot at the start, so version -1 reads it). A wave
writes its fresh payloads into the ring, then every event mixes by one gather over the ring
with its W row's weights, in increasing source order, zero-padded to the widest row: the
arithmetic of engine/base.py's block_mix. The arithmetic of one event, which the Ray engine's
actors share, is engine/async_event.py's.

What a client carries between events is in its block's `exchange_state`, so checkpoints,
--resume and replays carry it: `grad` and `loss` (the pending step's), `ready` (whether they
have been taken) and `history` (gossip: rows of one (n, history, D) ring, viewed per block).
A metrics row is n events; its loss is the mean of their losses in event order, its bytes the
schedule's.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch

from qgm_ray import async_schedule, build
from qgm_ray.clock import ClockModel
from qgm_ray.engine.async_event import (mix_versions, next_gradients, pair_mean, post_rows, pre_rows,
                                        take_pending_gradients)
from qgm_ray.engine.base import RoundRecord
from qgm_ray.engine.exchange import Exchange
from qgm_ray.schedule import LRSchedule, rounds_per_epoch

__all__ = ["AsyncExchange", "AsyncRun", "exchange_for", "fresh_state", "history_of", "mix_versions", "next_gradients",
           "pair_mean", "post_rows", "pre_rows", "take_pending_gradients"]


class AsyncExchange(Exchange):
    """The exchange of an asynchronous run: no rounds of W, the schedule's events instead."""

    def __init__(self, topology, groups: Sequence[Sequence[int]], payload_floats: int, schedule, wire):
        super().__init__(topology, False, groups, payload_floats, (), wire)
        self.schedule = schedule

    def round_bytes(self, t: int) -> int:
        """Bytes put on the wire by metrics row t's n events."""
        return self.schedule.row_bytes(t)

    def cross_node_bytes(self, t: int, nodes: Sequence) -> int:
        """Bytes of row t's events that leave their node with block b on node `nodes[b]`: a
        gossip payload once per other node holding an out-neighbour (as a synchronous round's
        are counted), AD-PSGD's two models where the peer is on another node."""
        s = self.schedule
        codes = {m: c for c, m in enumerate(dict.fromkeys(nodes))}
        node = np.empty(self.n, dtype=np.int64)
        for b, g in enumerate(self.groups):
            node[g] = codes[nodes[b]]
        events = s.events(t)
        clients = s.client[events]
        if s.kind == "pairwise":
            return int(s.event_bytes[events][node[s.peer[events]] != node[clients]].sum())
        if getattr(self, "_cross", (None,))[0] != tuple(nodes):
            # Per sender, the other nodes that hold a client mixing its payload.
            read = (s.weight != 0) & (s.src != np.arange(self.n)[:, None])
            sender = s.src[read]
            at = np.repeat(node, read.sum(1))
            pairs = np.unique(np.stack([sender, at])[:, node[sender] != at], axis=1)
            self._cross = (tuple(nodes), np.bincount(pairs[0], minlength=self.n))
        return int(self._cross[1][clients].sum() * self.payload_bytes)


def exchange_for(cfg, rule, topology, groups, payload_floats: int, wire, n_train: int) -> AsyncExchange:
    """The schedule of the whole run (its rows from the lr schedule), in its exchange; `rule`
    pairwise (AD-PSGD) or gossiping its parameters."""
    n = topology.n
    rows = LRSchedule.from_config(cfg, rounds_per_epoch(n_train, n, cfg.data.batch_size)).total_rounds
    kind = "pairwise" if getattr(rule, "pairwise", False) else "gossip"
    # The schedule is a function of these alone (read-only once built): a process asking again
    # (the Ray driver and coordinator, every chunk) reuses it rather than recomputing the run's.
    key = (repr(cfg), n, rows, wire.nbytes(payload_floats), kind)
    if _LAST_SCHEDULE[0] != key:
        model = ClockModel.from_config(cfg, build.max_clients(cfg))
        _LAST_SCHEDULE[:] = [key, async_schedule.build(model, topology.sparse(0), n, rows,
                                                       wire.nbytes(payload_floats), kind, cfg.seed)]
    return AsyncExchange(topology, groups, payload_floats, _LAST_SCHEDULE[1], wire)


_LAST_SCHEDULE: list = [None, None]   # [key, Schedule] of the last schedule this process built


def history_of(schedule) -> int:
    """Payload versions each client keeps (gossip); a pairwise run keeps none."""
    return 0 if schedule.kind == "pairwise" else schedule.history


def fresh_state(block, history: int) -> dict:
    """A block's rows of what an asynchronous run carries, at the run's start."""
    k, P = block.params.shape
    state = {"grad": torch.zeros_like(block.params), "loss": block.params.new_zeros(k),
             "ready": block.params.new_zeros(k)}
    if history:
        state["history"] = block.params.unsqueeze(1).repeat(1, history, 1)
    return state


class AsyncRun:
    """The blocks of an asynchronous run and the events that step them."""

    def __init__(self, blocks: Sequence, exchange: AsyncExchange):
        self.blocks, self.exchange, self.schedule = list(blocks), exchange, exchange.schedule
        self.pairwise = self.schedule.kind == "pairwise"
        groups = exchange.groups
        self.block_of = np.concatenate([np.full(len(g), b) for b, g in enumerate(groups)])
        self.row_of = np.concatenate([np.arange(len(g)) for g in groups])
        self.H = 0 if self.pairwise else self.schedule.history
        # One ring for every client (one gather mixes a wave); each block's exchange_state
        # holds a view of its rows, so its checkpoints carry them.
        if self.H:
            first = blocks[0].params
            self.ring = torch.empty(exchange.n, self.H, first.shape[1], dtype=first.dtype, device=first.device)
        for b, block in enumerate(self.blocks):
            state = fresh_state(block, self.H)
            if self.H:
                a = groups[b][0]
                self.ring[a:a + block.k] = state["history"]
                state["history"] = self.ring[a:a + block.k]
            block.exchange_state = state
        self.weight = torch.tensor(self.schedule.weight, dtype=blocks[0].params.dtype, device=blocks[0].device)

    def train(self, rounds: range, lr_of: Callable[[int], float], on_round: Optional[Callable] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> list[RoundRecord]:
        records = []
        for r in rounds:
            if should_stop is not None and should_stop():
                break
            self._take_pending_gradients()
            losses = np.empty(self.schedule.n)
            for wave in self.schedule.waves(r):
                self._wave(wave, lr_of(r), losses, r * self.schedule.n)
            record = self.exchange.record(r, float(np.mean(losses)))
            records.append(record)
            if on_round is not None:
                on_round(record)
        return records

    def _take_pending_gradients(self) -> None:
        """Step 0's gradients of a fresh run (a restored run has them in its state)."""
        for block in self.blocks:
            take_pending_gradients(block)

    def _wave(self, wave: np.ndarray, lr: float, losses: np.ndarray, start: int) -> None:
        s = self.schedule
        clients = s.client[wave]
        parts = []   # (block, rows, mask of the wave's events, gathered rule state, params)
        payload = None
        for b, block in enumerate(self.blocks):
            mask = self.block_of[clients] == b
            if not mask.any():
                continue
            rows = self.row_of[clients[mask]].tolist()
            losses[wave[mask] - start] = block.exchange_state["loss"][rows].tolist()
            state, params, out = pre_rows(block, rows, lr)
            if payload is None:
                payload = torch.empty(len(wave), out.shape[1], dtype=out.dtype, device=out.device)
            payload[torch.from_numpy(np.flatnonzero(mask))] = out
            parts.append((block, rows, mask, state, params))
        mixed = self._pair(clients, wave, payload) if self.pairwise else self._gossip(clients, wave, payload)
        for block, rows, mask, state, params in parts:
            post_rows(block, rows, state, params, mixed[torch.from_numpy(np.flatnonzero(mask))], lr)

    def _gossip(self, clients: np.ndarray, wave: np.ndarray, payload: torch.Tensor) -> torch.Tensor:
        """Each event's W row over the versions it mixes: its own fresh payload first goes into
        the ring (the schedule's depth keeps every slot a reader still needs)."""
        s, H = self.schedule, self.H
        steps = torch.from_numpy(s.step[wave] % H)
        self.ring[torch.from_numpy(clients), steps] = payload
        table = self.ring.view(-1, self.ring.shape[2])
        idx = torch.from_numpy(s.src[clients] * H + s.version[wave] % H)
        return mix_versions(table, idx, self.weight[torch.from_numpy(clients)])

    def _pair(self, clients: np.ndarray, wave: np.ndarray, payload: torch.Tensor) -> torch.Tensor:
        """AD-PSGD: each event's mean with its peer's model now; the peer takes the mean too."""
        peers = self.schedule.peer[wave]
        theirs = torch.empty_like(payload)
        for b, block in enumerate(self.blocks):
            mask = self.block_of[peers] == b
            if mask.any():
                theirs[torch.from_numpy(np.flatnonzero(mask))] = block.params[self.row_of[peers[mask]].tolist()]
        mixed = pair_mean(payload, theirs)
        for b, block in enumerate(self.blocks):
            mask = self.block_of[peers] == b
            if mask.any():
                block.params[self.row_of[peers[mask]].tolist()] = mixed[torch.from_numpy(np.flatnonzero(mask))]
        return mixed
