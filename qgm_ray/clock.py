"""Simulated time of a synchronous run: when each client starts each round, on a modelled
system of clients and links (the `clock:` config section). Numpy only; no torch, no engine.

The clock models the system being simulated, never the host that simulates it, and it never
reads the numbers the run computes: it is a function of the config, the graph W(t) and the
bytes each message has (the exchange stage's `edges`, so a compressed payload is a
shorter message). One round t of client i:

    compute_i(t) = step_seconds / (speed_i * trace_i(t)) * (slowdown if i straggles in t else 1)

Gossip (a client starts round t+1 once its own step of round t is done and every in-neighbour's
message of round t has arrived):

    start_i(t+1) = max over j in in(i) and i of
                   start_j(t) + compute_j(t) + [j != i] * (latency + bytes_{j->i} / bandwidth)

An all-reduce (the rules that mix the mean of everyone, the complete graph) waits for the last
client's step, then takes the time of a ring all-reduce of one payload of B bytes over n
clients: 2 (n - 1) steps (reduce-scatter, then all-gather), each sending a chunk of B / n bytes
to the next client on the ring and paying one latency:

    allreduce_seconds = 2 (n - 1) * (latency + (B / n) / bandwidth)

and every client starts the next round together. A round barrier (SlowMo's exact average) is
one more ring all-reduce of a payload behind a global barrier.

Modelled: per-client compute speed (lognormal factors, stragglers, a trace), per-message
latency and per-link bandwidth. Not modelled: congestion (links are independent, a client's
sends and receives overlap), packet loss, the host's real compute time (a model, not a
measurement), classes of links (every link has the same latency and bandwidth).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from qgm_ray.errors import ConfigError

TRACE_COLUMNS = ("client", "from_round", "speed")
BITS_PER_BYTE = 8
MBPS = 1e6                     # clock.bandwidth_mbps is in 10^6 bits per second
# Streams of the run's seed that the clock draws from, apart from every other use of `seed`.
_SPEED_STREAM, _STRAGGLER_STREAM = 0xC10C, 0x5106


# ---------------------------------------------------------------- the trace

@dataclass(frozen=True)
class Trace:
    """Per-client speed factors over time: client i has factor speed[e] from round from_round[e]
    until its next entry; before its first entry (or with none) its factor is 1. Entries are
    sorted by (client, from_round)."""
    client: np.ndarray
    from_round: np.ndarray
    speed: np.ndarray

    def factors(self, t: int, n: int) -> np.ndarray:
        """(n,) factors of round t for clients 0..n-1."""
        out = np.ones(n)
        live = (self.from_round <= t) & (self.client < n)
        c, s = self.client[live], self.speed[live]
        # Sorted by (client, from_round): a client's last live entry is its current one (chosen
        # here: numpy does not promise which of repeated indices an assignment keeps).
        last = np.append(c[1:] != c[:-1], True) if len(c) else np.zeros(0, dtype=bool)
        out[c[last]] = s[last]
        return out


def read_trace(path: str | Path) -> Trace:
    """A trace CSV with the header client,from_round,speed (integer client >= 0, integer
    from_round >= 0, speed > 0; one row per change). A bad file is one ConfigError line naming
    clock.trace, the row and the column."""
    key = f"clock.trace={str(path)!r}"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}: cannot be read ({type(e).__name__}); a CSV file with columns "
                          f"{','.join(TRACE_COLUMNS)}") from None
    if not rows or [h.strip() for h in rows[0]] != list(TRACE_COLUMNS):
        got = ",".join(rows[0]) if rows else "an empty file"
        raise ConfigError(f"{key}: row 1 must be the header {','.join(TRACE_COLUMNS)}, got {got[:80]!r}")
    entries = []
    for r, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(TRACE_COLUMNS):
            raise ConfigError(f"{key}: row {r} has {len(row)} columns; expected {len(TRACE_COLUMNS)} "
                              f"({','.join(TRACE_COLUMNS)})")
        entries.append(tuple(_cell(key, r, name, cell) for name, cell in zip(TRACE_COLUMNS, row)))
    seen = set()
    for r, (c, t, _) in enumerate(entries, start=2):
        if (c, t) in seen:
            raise ConfigError(f"{key}: row {r}, columns client,from_round: client {c} has two rows for round {t}")
        seen.add((c, t))
    entries.sort(key=lambda e: (e[0], e[1]))
    arr = np.array(entries, dtype=np.float64).reshape(-1, 3)
    return Trace(arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2])


def _cell(key: str, r: int, name: str, cell: str):
    text = cell.strip()
    try:
        value = int(text) if name != "speed" else float(text)
    except ValueError:
        kind = "an integer" if name != "speed" else "a number"
        raise ConfigError(f"{key}: row {r}, column {name}: expected {kind}, got {text[:40]!r}") from None
    if name == "speed" and not (np.isfinite(value) and value > 0):
        raise ConfigError(f"{key}: row {r}, column speed: must be a finite number > 0, got {text[:40]!r}")
    if name != "speed" and value < 0:
        raise ConfigError(f"{key}: row {r}, column {name}: must be >= 0, got {value}")
    return value


# ---------------------------------------------------------------- compute time

def speed_factors(count: int, sigma: float, seed: int) -> np.ndarray:
    """(count,) lognormal speed factors exp(N(0, sigma^2)) of clients 0..count-1, from the run's
    seed; a client's factor does not depend on how many clients there are. sigma 0: all 1."""
    if sigma == 0:
        return np.ones(count)
    rng = np.random.default_rng([seed, _SPEED_STREAM])
    return rng.lognormal(0.0, sigma, size=count)


def stragglers(n: int, fraction: float, seed: int, t: Optional[int] = None) -> np.ndarray:
    """(n,) bool: which of n clients straggle, round(fraction * n) of them, from the run's seed;
    t None: the run's fixed choice (for this client count), else round t's own draw."""
    count = int(round(fraction * n))
    mask = np.zeros(n, dtype=bool)
    if count:
        key = [seed, _STRAGGLER_STREAM, n] + ([] if t is None else [int(t) + 1])
        mask[np.random.default_rng(key).permutation(n)[:count]] = True
    return mask


@dataclass(frozen=True)
class ClockModel:
    """The clock's parameters, from the config (pure data): seconds and bytes per second."""
    step_seconds: float
    latency: float              # seconds per message
    bytes_per_second: float     # per link
    speeds: np.ndarray          # (n_max,) factors by graph position
    straggler_fraction: float
    slowdown: float
    redraw: bool                # stragglers drawn anew each round
    seed: int
    trace: Optional[Trace] = None

    @classmethod
    def from_config(cls, cfg, n_max: int) -> "ClockModel":
        k = cfg.clock
        return cls(step_seconds=k.step_seconds, latency=k.latency_ms / 1000.0,
                   bytes_per_second=k.bandwidth_mbps * MBPS / BITS_PER_BYTE,
                   speeds=speed_factors(n_max, k.speed.sigma, cfg.seed),
                   straggler_fraction=k.stragglers.fraction, slowdown=k.stragglers.slowdown,
                   redraw=k.stragglers.redraw == "round", seed=cfg.seed,
                   trace=read_trace(k.trace) if k.trace else None)

    def compute_seconds(self, t: int, n: int) -> np.ndarray:
        """(n,) seconds of round t's local step of clients 0..n-1."""
        speed = self.speeds[:n]     # drawn for the run's most clients (build.max_clients)
        if self.trace is not None:
            speed = speed * self.trace.factors(t, n)
        seconds = self.step_seconds / speed
        slow = stragglers(n, self.straggler_fraction, self.seed, t if self.redraw else None)
        return np.where(slow, seconds * self.slowdown, seconds)

    def link_seconds(self, nbytes: np.ndarray) -> np.ndarray:
        """Seconds from a message's send to its arrival: one latency plus its bytes over the link."""
        return self.latency + np.asarray(nbytes, dtype=np.float64) / self.bytes_per_second

    def allreduce_seconds(self, n: int, payload_bytes: int) -> float:
        """A ring all-reduce of one payload over n clients: 2 (n - 1) steps of B / n bytes, one
        latency each (0 for one client)."""
        return 2 * (n - 1) * (self.latency + (payload_bytes / n) / self.bytes_per_second)


# ---------------------------------------------------------------- one round

def gossip_round(start: np.ndarray, compute: np.ndarray, src: np.ndarray, dst: np.ndarray,
                 link: np.ndarray) -> np.ndarray:
    """start(t+1) from start(t): each client waits for its own step and for the arrival of every
    message on the directed edges src[e] -> dst[e] (link[e] seconds each). Vectorised over the
    edge list."""
    done = start + compute
    nxt = done.copy()
    if len(src):
        np.maximum.at(nxt, np.asarray(dst, dtype=np.int64), done[np.asarray(src, dtype=np.int64)] + link)
    return nxt


def barrier_round(start: np.ndarray, compute: np.ndarray, seconds: float) -> np.ndarray:
    """start(t+1) when every client waits for the last one, then `seconds` of collective."""
    return np.full(len(start), np.max(start + compute) + seconds) if len(start) else start.copy()


def resized(start: Sequence[float], n: int) -> np.ndarray:
    """The start times for n clients: a resize happens where every client has finished its
    round, so a joiner starts when the last client so far is done; a leaver's entry goes."""
    start = np.asarray(start, dtype=np.float64)
    if len(start) >= n:
        return start[:n].copy()
    fill = float(np.max(start)) if len(start) else 0.0
    return np.concatenate([start, np.full(n - len(start), fill)])
