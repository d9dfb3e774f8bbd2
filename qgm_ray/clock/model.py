"""The clock's durations (ClockModel, from the config): each client's local step of a round
(its speed factor, a straggler's slowdown, the trace), a message on a link, a ring all-reduce."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from qgm_ray.clock.trace import Trace, read_trace


BITS_PER_BYTE = 8
MBPS = 1e6                     # clock.bandwidth_mbps is in 10^6 bits per second
# Streams of the run's seed that the clock draws from, apart from every other use of `seed`.
_SPEED_STREAM, _STRAGGLER_STREAM = 0xC10C, 0x5106


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
