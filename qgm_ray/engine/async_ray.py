"""An asynchronous run (`clock.mode: async`) on the Ray engine: each ClientActor steps its
block's events of every wave of the schedule (qgm_ray/async_schedule.py) with the arithmetic of
engine/async_event.py, so the numbers equal the local engine's bit for bit.

The coordinator knows every wave in advance (`WavePlan`, numpy only). An actor's call for wave w
finishes its events of wave w - 1 and starts its events of wave w, one call per actor per wave
(an actor with neither is not called), as a synchronous round's `step` does:

    actor.async_wave(deliver, post, pre, *received) -> (*exported rows, record)

- pre (wave w): the rule's pre_mix of the block's rows whose events are due (`pre_rows`); the
  payloads another actor reads leave as arrays (gossip: the versions a reader elsewhere mixes;
  AD-PSGD: the payload of an initiator whose peer is elsewhere, and the model of each row that
  is the peer of an initiator elsewhere). The record holds the events' pending losses.
- post (wave w - 1): gossip writes the wave's own payloads into the block's ring and mixes its
  W rows over the ring (`mix_versions`); AD-PSGD averages each initiator's payload with its
  peer's model (`pair_mean`: the peer's actor computes the same mean from the same two rows and
  keeps it); then post_mix and the next gradients (`post_rows`).
- deliver (gossip): the versions of in-neighbours held by other actors that this actor's events
  read, written into its copy of their rings (in the order they were made) before it mixes.

Each actor keeps one ring table: its own clients' rings (the block's `exchange_state`, which
checkpoints carry) then a copy of each in-neighbour's held elsewhere, refreshed from the owners
at every chunk's start (`async_history` -> `async_begin`), so a restore, a replay and a resume
start from the owners' rings. Versions arrive no earlier than the local engine writes them and
before any reader mixes, and a slot is overwritten only where the local engine's ring is too, so
every read finds the version the schedule names. A chunk ends with a post-only call.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray import build
from qgm_ray.engine.async_event import mix_versions, pair_mean, post_rows, pre_rows, take_pending_gradients
from qgm_ray.engine.async_run import exchange_for, fresh_state, history_of
from qgm_ray.engine.base import exports, groups_of, wiring


class WavePlan:
    """What each actor does in each wave of a schedule over blocks `groups` (graph W), and where
    the rows it exports go. Coordinator side; numpy only."""

    def __init__(self, schedule, groups: Sequence[Sequence[int]], W):
        s = self.schedule = schedule
        self.groups = [list(g) for g in groups]
        n = s.n
        self.block_of = np.empty(n, dtype=np.int64)
        self.row_of = np.empty(n, dtype=np.int64)
        for b, g in enumerate(self.groups):
            self.block_of[g], self.row_of[g] = b, np.arange(len(g))
        self.pairwise = s.kind == "pairwise"
        self.H = history_of(s)
        if self.pairwise:
            return
        # Each actor's ring table: its own rows, then the in-neighbours held elsewhere.
        self.sources = [wiring(W, g)[1] for g in self.groups]
        self.exports = [exports(W, g) for g in self.groups]
        self.table_row = np.full((len(self.groups), n), -1, dtype=np.int64)
        for b, g in enumerate(self.groups):
            self.table_row[b, g] = np.arange(len(g))
            self.table_row[b, self.sources[b]] = len(g) + np.arange(len(self.sources[b]))
        # (event, reading block) for every read of an event by another block, sorted by event.
        reads = s.deps[:, 1:]
        reader = np.broadcast_to(self.block_of[s.client][:, None], reads.shape)
        on = reads >= 0
        x, rb = reads[on], reader[on]
        away = self.block_of[s.client[x]] != rb
        pairs = np.unique(np.stack([x[away], rb[away]], axis=1), axis=0) if away.any() else np.empty((0, 2), int)
        self.read_event, self.read_block = pairs[:, 0], pairs[:, 1]

    def readers(self, e: int) -> np.ndarray:
        """The other blocks that read event e's payload."""
        a, b = np.searchsorted(self.read_event, [e, e + 1])
        return self.read_block[a:b]

    def wave(self, wave: np.ndarray, lr: float) -> list[Optional[tuple[dict, dict]]]:
        """Per block: (pre, post) of its part of this wave, or None where it has none. `pre`
        goes to the call that starts the wave, `post` (routing filled in by `route`) to the one
        that finishes it."""
        s = self.schedule
        clients = s.client[wave]
        blocks = self.block_of[clients]
        out: list = [None] * len(self.groups)
        if self.pairwise:
            peers = s.peer[wave]
            peer_block = self.block_of[peers]
            away = peer_block != blocks
        for b in np.unique(blocks if not self.pairwise else np.concatenate([blocks, peer_block])).tolist():
            mine = blocks == b
            ev, c = wave[mine], clients[mine]
            rows = self.row_of[c].tolist()
            pre = {"lr": lr, "rows": rows, "events": ev.tolist()}
            if self.pairwise:
                pre["export"] = np.flatnonzero(away[mine]).tolist()
                given = away & (peer_block == b)
                pre["give"] = self.row_of[peers[given]].tolist()
                p = peers[mine]
                post = {"peer_rows": np.where(away[mine], -1, self.row_of[p]).tolist(), "take": pre["give"]}
            else:
                pre["export"] = [i for i, e in enumerate(ev.tolist()) if len(self.readers(e))]
                H = self.H
                post = {"slots": (s.step[ev] % H).tolist(),
                        "idx": (self.table_row[b][s.src[c]] * H + s.version[ev] % H).tolist(),
                        "weight": s.weight[c].tolist()}
            out[b] = (pre, post)
        return out

    def route(self, wave: np.ndarray, plans: list, exported: list, deliver: list) -> list:
        """After every call of a wave: each block's (post, refs) for the call that finishes it,
        from `exported` (per block, the refs its call returned, in its pre's order); gossip
        appends (ref, table row, slot) to `deliver[reader block]` instead."""
        s = self.schedule
        posts: list = [None] * len(self.groups)
        if not self.pairwise:
            for b, plan in enumerate(plans):
                if plan is None:
                    continue
                pre, post = plan
                for i, ref in zip(pre["export"], exported[b]):
                    e = pre["events"][i]
                    for rb in self.readers(e).tolist():
                        deliver[rb].append((ref, int(self.table_row[rb, s.client[e]]), int(s.step[e] % self.H)))
                if pre["rows"]:
                    posts[b] = (post, [])
            return posts
        peers = s.peer[wave]
        peer_block = self.block_of[peers]
        straddle = peer_block != self.block_of[s.client[wave]]
        payload_of, model_of = {}, {}   # event -> ref of the initiator's payload / of the peer's model
        for b, plan in enumerate(plans):
            if plan is None:
                continue
            pre, _ = plan
            n_out = len(pre["export"])
            payload_of.update(zip((pre["events"][i] for i in pre["export"]), exported[b][:n_out]))
            model_of.update(zip(wave[straddle & (peer_block == b)].tolist(), exported[b][n_out:]))
        for b, plan in enumerate(plans):
            if plan is None:
                continue
            pre, post = plan
            theirs = [model_of[pre["events"][i]] for i in pre["export"]]
            taken = [payload_of[e] for e in wave[straddle & (peer_block == b)].tolist()]
            posts[b] = (post, theirs + taken)
        return posts


class Waves:
    """The calls of a chunk's rows, made through `call(b, deliver, post, pre, k)`: actor b's
    `async_wave` with the deliveries [(ref, table row, slot)], the (post, refs) that finish its
    last wave (or None) and this wave's pre (or None), returning its k exported refs and then
    its record's. The coordinator's call goes through Ray; any other runs the actors in hand."""

    def __init__(self, plan: WavePlan, n_actors: int, call):
        self.plan, self.call = plan, call
        self.deliver: list = [[] for _ in range(n_actors)]   # gossip: what each actor has yet to write
        self.posts: list = [None] * n_actors                  # (post, refs) finishing each actor's last wave

    def begin(self, history, begin) -> list:
        """A chunk's start: `history(b, positions)` -> refs of actor b's rings of these positions
        (those other actors copy), then `begin(b, refs)` hands each actor its in-neighbours'
        rings in source order. The begin calls' results."""
        rings: dict = {}
        sources = [[] for _ in self.posts] if self.plan.pairwise else self.plan.sources
        if not self.plan.pairwise:
            for b, sent in enumerate(self.plan.exports):
                if sent:
                    rings.update(zip(sent, history(b, sent)))
        return [begin(b, [rings[p] for p in sources[b]]) for b in range(len(self.posts))]

    def row(self, r: int, lr: float) -> list:
        """Submit row r's waves; the refs of their records."""
        records = []
        for wave in self.plan.schedule.waves(r):
            plans = self.plan.wave(wave, lr)
            exported: list = [[] for _ in self.posts]
            for b, post in enumerate(self.posts):
                pre = plans[b][0] if plans[b] is not None else None
                if pre is None and post is None:
                    continue
                k = len(pre["export"]) + len(pre.get("give", ())) if pre is not None else 0
                refs = self._call(b, post, pre, k)
                exported[b] = refs[:-1]
                records.append(refs[-1])
            self.posts = self.plan.route(wave, plans, exported, self.deliver)
        return records

    def finish(self) -> list:
        """Post-only calls finishing every started event; the refs of their records."""
        done = [self._call(b, post, None, 0)[-1] for b, post in enumerate(self.posts) if post is not None]
        self.posts = [None] * len(self.posts)
        return done

    def _call(self, b: int, post, pre: Optional[dict], k: int) -> list:
        got, self.deliver[b] = self.deliver[b], []
        return self.call(b, got, post, pre, k)


def fresh_rings(cfg, block, wire, n_train: int) -> dict:
    """The rows a ClientActor's block carries through an asynchronous run, at its start (before
    any state loads). The rings keep the schedule's payload versions: a function of the config
    alone (asynchronous runs keep their clients, so n is the config's)."""
    n = cfg.topology.n_clients
    ex = exchange_for(cfg, block.algorithm, build.build_topology(cfg, n), groups_of(n, cfg.ray.clients_per_actor),
                      block.payload_size, wire, n_train)
    return fresh_state(block, history_of(ex.schedule))


class AsyncClient:
    """A ClientActor's side of an asynchronous run: its block, its ring table (gossip) and the
    events it has started but not finished."""

    def __init__(self, block, rings: Sequence[torch.Tensor]):
        """A chunk's start: `rings` are copies of the in-neighbours' rings (`history_rows` of
        their actors, in source order); the block takes the pending gradients of a fresh run."""
        self.block = block
        st = block.exchange_state
        self.table: Optional[torch.Tensor] = None
        if "history" in st:
            own = st["history"]
            k, H, D = own.shape
            self.table = torch.empty(k + len(rings), H, D, dtype=own.dtype, device=own.device)
            self.table[:k] = own
            for i, ring in enumerate(rings):
                self.table[k + i] = ring.to(own.device)
            st["history"] = self.table[:k]   # the block's rows stay what checkpoints carry
        take_pending_gradients(block)
        self.started = None   # (rows, state, params, payload, lr) of the events of the last wave

    @staticmethod
    def history_rows(block, rows: Sequence[int]) -> list[np.ndarray]:
        """These rows' rings (H, D each), for the actors that hold a copy."""
        return [np.ascontiguousarray(r) for r in block.exchange_state["history"][list(rows)].detach().cpu().numpy()]

    def wave(self, deliver: Sequence[tuple], post: Optional[dict], pre: Optional[dict],
             received: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
        """Finish the last wave's events (post), start this wave's (pre): the rows to export,
        in pre's order (payloads, then the models given), and the record of the events."""
        block = self.block
        received = list(received)
        for (row, slot), x in zip(deliver, received):
            self.table[row, slot] = x.to(self.table.device)
        got = received[len(deliver):]
        if post is not None:
            self._finish(post, got)
        if pre is None:
            return [], {"events": [], "losses": []}
        rows = pre["rows"]
        losses = block.exchange_state["loss"][rows].tolist()
        out: list[torch.Tensor] = []
        if rows:
            state, params, payload = pre_rows(block, rows, pre["lr"])
            self.started = (rows, state, params, payload, pre["lr"])
            out += [payload[i] for i in pre["export"]]
        out += [block.params[r] for r in pre.get("give", ())]
        return out, {"events": pre["events"], "losses": losses}

    def _finish(self, post: dict, got: list) -> None:
        block = self.block
        if self.started is not None:
            rows, state, params, payload, lr = self.started
            self.started = None
            if self.table is not None:
                self.table[torch.tensor(rows), torch.tensor(post["slots"])] = payload
                table = self.table.view(-1, self.table.shape[2])
                weight = torch.tensor(post["weight"], dtype=payload.dtype, device=payload.device)
                mixed = mix_versions(table, torch.tensor(post["idx"]), weight)
            else:
                peer_rows = post["peer_rows"]
                theirs = torch.empty_like(payload)
                here = [j for j, r in enumerate(peer_rows) if r >= 0]
                away = [j for j, r in enumerate(peer_rows) if r < 0]
                if here:
                    theirs[here] = block.params[[peer_rows[j] for j in here]]
                for j, x in zip(away, got):
                    theirs[j] = x.to(theirs.device)
                got = got[len(away):]
                mixed = pair_mean(payload, theirs)
                if here:
                    block.params[[peer_rows[j] for j in here]] = mixed[here]
            post_rows(block, rows, state, params, mixed, lr)
        take = post.get("take", [])
        if take:
            # The peers of initiators elsewhere: the same mean of the same two rows.
            theirs = torch.stack([x.to(block.params.device) for x in got[:len(take)]])
            block.params[take] = pair_mean(theirs, block.params[take])
