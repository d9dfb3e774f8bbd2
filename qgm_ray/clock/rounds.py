"""One round of the clock: every client's start time of round t+1 from round t's (gossip, a
barrier), and the start times across a resize."""
from __future__ import annotations

from typing import Sequence

import numpy as np


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
