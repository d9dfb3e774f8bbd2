"""When a run reached each step of its start: seconds since its process started, recorded
once per phase and written to summary.json as `startup` (what `bench/startup.py` reads).

Phases, in the order a run reaches them (`ray` only on the Ray engine; a resumed run's
`first_round` is the first round it trains):

    run          the run is entered: the config resolved, the runner and torch imported
    data         the dataset loaded and partitioned, the plug-ins checked
    ray          Ray started or joined
    engine       the engine ready: its blocks built (on Ray, in the started ClientActors)
    first_round  the first round trained
    end          the engine closed, the summary about to be written

The process's start is read from /proc (the kernel's record: the interpreter's own start-up
counts); where there is none, from when this module was imported.
"""
from __future__ import annotations

import os
import time
from typing import Optional

PHASES = ("run", "data", "ray", "engine", "first_round", "end")

_IMPORTED = time.time()


def process_start() -> float:
    """The wall-clock time this process started (time.time()'s scale)."""
    try:
        with open("/proc/self/stat") as f:
            # The command name (field 2) may hold spaces: the fields after it follow its ')'.
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return _IMPORTED
    return time.time() - (uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


class Startup:
    """One run's phase times. `mark(phase)` records the first time a phase is reached (a
    replay's later rounds or a second close do not move it)."""

    def __init__(self, start: Optional[float] = None):
        self.start = process_start() if start is None else start
        self._at: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown start-up phase {phase!r}; one of: {', '.join(PHASES)}")
        self._at.setdefault(phase, time.time())

    def seconds(self) -> dict:
        """{phase: seconds since the process started}, for the phases reached, in PHASES order."""
        return {p: round(self._at[p] - self.start, 3) for p in PHASES if p in self._at}
