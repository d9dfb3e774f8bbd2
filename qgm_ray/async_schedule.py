"""The schedule of an asynchronous run (`clock.mode: async`): who steps when, mixing which
versions of whose payload. Numpy only; a pure function of the config (the clock model, the
graph, the payload's bytes, the seed), never of the numbers the run computes.

Client i takes local steps m = 0, 1, 2, ... back to back; step m takes compute_i(m) of the
clock model (qgm_ray/clock/, with the step index m where the synchronous clock has the round),
so it ends at

    f_i(m) = s_i(m) + compute_i(m),      s_i(0) = 0,   s_i(m + 1) = f_i(m) + gap

and that end is the step's event: everything the step changes happens there, atomically.

- gossip (every gossip rule whose payload is its parameters): at f_i(m) client i sends its
  payload version m to its out-neighbours (it arrives link = latency + bytes / bandwidth
  later) and mixes with W's row i its own payload m and the newest version v_j of each
  in-neighbour j that has arrived by then (f_j(v_j) + link <= f_i(m) and f_j(v_j) < f_i(m));
  version -1, before any has arrived, is the initial model every client starts from. There
  is no barrier: gap = 0. Staleness m - v_j emerges from the clock and is recorded.
- pairwise (AD-PSGD, Lian et al., ICML 2018): at f_i(m) client i draws one neighbour p from
  its own stream (seeded by the run's seed and its position; uniform over its neighbours)
  and the pair averages atomically: both hold the same mean afterwards, then i applies its
  local step. The exchange is a round trip of the model (i sends x_i, receives x_p), which
  the initiator waits for: gap = 2 link. The passive peer's own computation goes on.

The run's events are taken in the order (f, client): a metrics row is n consecutive events
(n client steps in all, what a synchronous round costs), and a row ends at the finish time of
its last event (`end_seconds`). An event depends on its client's previous event and on the
events whose results it reads (gossip: the versions it mixes; pairwise: the last events that
touched either client). Within a row, events are executed in waves (`waves`): an event's wave
is one more than the latest wave of the events of the row it depends on (the longest chain of
dependencies: the fewest waves any order respecting them can have), so no event depends on
another of its wave, and any execution respecting the dependencies computes the same numbers.

A client keeps the payload versions its in-neighbours may still read in a ring of `history`
slots (version v in slot v mod history). A reader of version v of client j in row r runs, at the
latest, after every event of j up to the end of row r, so `history` = 1 + the largest
(j's last version in the reader's row - v) over every read: no slot is overwritten before its
last reader has run, in any order of the row's events that respects their dependencies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

KINDS = ("gossip", "pairwise")
_PEER_STREAM = 0xAD95   # the stream of the run's seed that draws AD-PSGD's peers


@dataclass
class Schedule:
    n: int
    kind: str
    client: np.ndarray          # (N,) the client of each event, in (finish, client) order
    step: np.ndarray            # (N,) its local step m
    finish: np.ndarray          # (N,) f_i(m), seconds
    src: np.ndarray             # (n, d) W's row of each client: source positions, padded with the client itself
    weight: np.ndarray          # (n, d) their weights, padded with 0
    version: Optional[np.ndarray]   # (N, d) gossip: the version mixed from each source (own: m)
    peer: Optional[np.ndarray]      # (N,) pairwise: the neighbour the event averages with
    deps: np.ndarray            # (N, c) per event, the events it depends on, padded with -1
    history: int                # payload versions kept per client (gossip)
    event_bytes: np.ndarray     # (N,) bytes the event puts on the wire

    @property
    def rows(self) -> int:
        return len(self.client) // self.n

    def events(self, r: int) -> range:
        """Indices of row r's events."""
        return range(r * self.n, (r + 1) * self.n)

    def end_seconds(self, r: int) -> float:
        """Simulated time when row r's last step finished."""
        return float(self.finish[(r + 1) * self.n - 1])

    def row_bytes(self, r: int) -> int:
        return int(self.event_bytes[r * self.n:(r + 1) * self.n].sum())

    def staleness(self, r0: int, r1: int) -> tuple[float, float]:
        """(mean, max) of own step - version mixed, over every in-neighbour of every event of
        rows r0..r1-1 (gossip; NaN for pairwise, which reads current models)."""
        if self.version is None or r1 <= r0:
            return float("nan"), float("nan")
        e = slice(r0 * self.n, r1 * self.n)
        c = self.client[e]
        neighbour = (self.src[c] != c[:, None]) & (self.weight[c] != 0)
        lag = (self.step[e][:, None] - self.version[e])[neighbour]
        if not len(lag):
            return 0.0, 0.0
        return float(lag.mean()), float(lag.max())

    def waves(self, r: int) -> list[np.ndarray]:
        """Row r's events grouped into waves, each in event order (module docstring)."""
        start = r * self.n
        level = [0] * self.n
        # Dependencies before the row are done (level 0); the padding -1 is before every row.
        for k, deps in enumerate((np.maximum(self.deps[start:start + self.n] - start + 1, 0)).tolist()):
            level[k] = 1 + max(level[d - 1] if d else 0 for d in deps)
        level = np.asarray(level)
        order = np.argsort(level, kind="stable")
        cuts = np.flatnonzero(np.diff(level[order])) + 1
        return [start + w for w in np.split(order, cuts)]


def finish_times(model, n: int, count: int, gap: float) -> np.ndarray:
    """(T, n): f_i(m) of steps m = 0..T-1, for enough steps that the first `count` events in
    (finish, client) order are among them."""
    rows, s, t, check = [], np.zeros(n), 0, 1
    while True:
        f = s + model.compute_seconds(t, n)
        rows.append(f)
        s = f + gap
        t += 1
        if t * n >= count and t >= check:
            check = t + max(1, t // 4)
            kth = np.partition(np.concatenate(rows), count - 1)[count - 1]
            if f.min() > kth:   # every later step of every client ends after the count-th event
                return np.stack(rows)


def build(model, W, n: int, rows: int, payload_bytes: int, kind: str, seed: int) -> Schedule:
    """The schedule of `rows` metrics rows of n clients on the static graph W (a SparseW;
    undirected for pairwise) with payloads of `payload_bytes` bytes."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    count = rows * n
    link = float(model.link_seconds(payload_bytes))
    gap = 2 * link if kind == "pairwise" else 0.0
    F = finish_times(model, n, count, gap)
    T = F.shape[0]
    flat_f = F.reshape(-1)
    flat_c = np.tile(np.arange(n, dtype=np.int64), T)
    order = np.lexsort((flat_c, flat_f))[:count]
    client, step, finish = flat_c[order], order // n, flat_f[order]
    pos = np.full((T, n), -1, dtype=np.int64)       # (step, client) -> event index
    pos.reshape(-1)[order] = np.arange(count)
    made = np.bincount(client, minlength=n)          # events of each client

    d = int(np.max(np.diff(W.row_ptr))) if n else 0
    src = np.tile(np.arange(n, dtype=np.int64)[:, None], (1, d))
    weight = np.zeros((n, d))
    for i in range(n):
        cols, ws = W.row(i)
        src[i, :len(cols)], weight[i, :len(ws)] = cols, ws
    own = src == np.arange(n)[:, None]
    out_degree = np.bincount(src[~own & (weight != 0)], minlength=n)

    prev = np.where(step > 0, pos[np.maximum(step - 1, 0), client], -1)
    if kind == "gossip":
        version = np.repeat(step[:, None], d, axis=1)
        for i in range(n):
            mine = pos[:made[i], i]
            for c in np.flatnonzero(~own[i] & (weight[i] != 0)):
                j = src[i, c]
                arrived = np.searchsorted(F[:, j] + link, F[:made[i], i], side="right")
                before = np.searchsorted(F[:, j], F[:made[i], i], side="left")
                version[mine, c] = np.minimum(arrived, before) - 1
        reads = ~own[client] & (weight[client] != 0)
        on = np.where(reads, pos[np.maximum(version, 0), src[client]], -1)
        on[version < 0] = -1
        deps = np.concatenate([prev[:, None], on], axis=1)
        # The depth of the ring: a reader of (j, v) in row r runs, at the latest, after every
        # event of j in rows <= r; slot v mod H must still hold v then.
        last = _made_by_row(client, rows, n)[(np.arange(count) // n)[:, None], src[client]] - 1
        history = int(max(1, (np.where(reads, last - version, 0).max() + 1) if count else 1))
        peer = None
        event_bytes = out_degree[client] * int(payload_bytes)
    else:
        peer = np.empty(count, dtype=np.int64)
        for i in range(n):
            nbrs = src[i][~own[i] & (weight[i] != 0)]
            u = np.random.default_rng([seed, _PEER_STREAM, i]).random(made[i])
            peer[pos[:made[i], i]] = nbrs[np.floor(u * len(nbrs)).astype(np.int64)]
        deps, last = np.empty((count, 2), dtype=np.int64), np.full(n, -1, dtype=np.int64)
        for e, (i, p) in enumerate(zip(client.tolist(), peer.tolist())):
            deps[e] = last[i], last[p]
            last[i] = last[p] = e
        version, history = None, 1
        event_bytes = np.full(count, 2 * int(payload_bytes), dtype=np.int64)
    return Schedule(n, kind, client, step, finish, src, weight, version, peer, deps, history, event_bytes)


def _made_by_row(client: np.ndarray, rows: int, n: int) -> np.ndarray:
    """(rows, n): events of each client in rows 0..r."""
    out = np.zeros((rows, n), dtype=np.int64)
    for r in range(rows):
        out[r] = np.bincount(client[r * n:(r + 1) * n], minlength=n)
    return np.cumsum(out, axis=0)
