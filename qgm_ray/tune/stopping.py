"""A stop signal during a sweep: Tune's graceful stop, or an exit at once before Tune starts or
at a second signal."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

from qgm_ray.command import command
from qgm_ray.tune.names import EXPERIMENT
from qgm_ray.tune.sealing import seal_state


class _SweepSignals:
    """SIGTERM, and every other stop signal of qgm_ray.signals, does what Ctrl-C does: Tune's
    graceful stop (it saves the experiment state, our driver then writes results.csv / table.md
    of what finished and prints `tune --resume`, and exits with 128 + the signal's number).
    Before Tune starts (Ray starting) a signal exits at once: nothing ran. A second signal exits
    at once with the resume hint. Tune installs its own SIGINT handler in fit() and, after the
    first Ctrl-C, puts back the one it found: ours, which aborts. Ray's processes are left to
    the reaper (engine/reaper.py)."""

    def __init__(self, sweep_dir: Path, new: bool, log: Callable[[str], None]):
        self.sweep_dir, self.new, self.log = sweep_dir, new, log
        self.previous: dict = {}
        self.signum: Optional[int] = None   # the signal, when not Ctrl-C (that goes to Tune's handler)

    def install(self) -> None:
        """Before Ray starts, and again after (its core worker installs C++ handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        from qgm_ray.signals import SIGNALS
        previous = {s: signal.signal(s, self._abort if s == signal.SIGINT else self._term) for s in SIGNALS}
        if not self.previous:
            self.previous = previous

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}

    def _term(self, signum, frame):
        self.signum = self.signum or signum
        signal.raise_signal(signal.SIGINT)   # whoever holds SIGINT now: Tune (graceful) or _abort

    def _abort(self, signum, frame):
        signum = self.signum or signum   # another stop signal arrives here as the SIGINT _term raised
        name = signal.Signals(signum).name
        if (self.sweep_dir / EXPERIMENT).exists():
            seal_state(self.sweep_dir)   # Tune's loop waits for this handler: its state is whole
            msg = (f"{name}: stopped at once; finished trials are kept; continue with: "
                   f"{command()} tune --resume {self.sweep_dir}")
        else:  # Tune had not started: take back the directory this sweep made, nothing ran
            if self.new:
                (self.sweep_dir / "config.yaml").unlink(missing_ok=True)
                try:
                    self.sweep_dir.rmdir()
                except OSError:
                    pass
            msg = f"{name}: stopped before the sweep started; nothing ran"
        print(msg, file=sys.stderr, flush=True)
        os._exit(128 + signum)
