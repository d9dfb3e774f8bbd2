"""A clock trace (`clock.trace`): a CSV of client,from_round,speed read into per-client speed
factors over time; a bad file is one ConfigError line."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qgm_ray.errors import ConfigError


TRACE_COLUMNS = ("client", "from_round", "speed")


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
