"""A thread that puts the stop signals' C-level handlers back whenever something behind
Python's back (Ray's core worker, ray.shutdown()) replaces them: the watchdog under the
phase-aware handlers of a run and a sweep (qgm_ray/signals.py)."""
from __future__ import annotations

import ctypes
import threading
from typing import Sequence


class HandlerGuard:
    """Keeps the C-level handlers of `signals` (qgm_ray/signals.py's SIGNALS) what they are
    now, from a thread that looks every EVERY_S. Ray's core worker installs C++ handlers of its
    own when it connects (a stack dump, then death) and ray.shutdown() resets SIGTERM to the
    default action, behind Python's back: Python still believes its handler is in place, and a
    SIGTERM during Ray's shutdown would kill the process silently (exit -15). Linux / glibc; a
    no-op elsewhere."""

    EVERY_S = 0.02   # the window left: 20 ms of a 2-s shutdown
    _SIZE = 512   # >= sizeof(struct sigaction); the handler pointer is its first field

    def __init__(self, signals: Sequence[int]):
        self._stop = threading.Event()
        self.restored = 0
        try:
            self._sigaction = ctypes.CDLL(None, use_errno=True).sigaction
        except (OSError, AttributeError):
            self._sigaction = None
            return
        self._ptr = ctypes.sizeof(ctypes.c_void_p)
        self.saved = {s: self._current(s) for s in signals}
        self._thread = threading.Thread(target=self._watch, name="qgm-signal-guard", daemon=True)
        self._thread.start()

    def _current(self, sig: int):
        buf = ctypes.create_string_buffer(self._SIZE)
        self._sigaction(int(sig), None, buf)
        return buf

    def _watch(self) -> None:
        while not self._stop.wait(self.EVERY_S):
            for sig, saved in self.saved.items():
                if self._current(sig).raw[:self._ptr] != saved.raw[:self._ptr]:
                    self._sigaction(int(sig), saved, None)
                    self.restored += 1

    def stop(self) -> None:
        self._stop.set()
        if self._sigaction is not None:
            self._thread.join()
