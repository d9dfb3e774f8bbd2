"""stdout and stderr that a reader going away (`main.py | head -c 20`), a full device
(`> /dev/full`) or a lost terminal (SIGHUP, a closed SSH session) never stop.

A run's product is its directory; what it prints is a view of it. A write to a stream that
fails (EPIPE, ENOSPC, EIO: an OSError from print, logging or tqdm) is absorbed: the stream's
file descriptor is pointed at /dev/null, so the rest of the run, its child processes and
Python's flush at exit write nowhere instead of raising, and the run completes. The first
failure is kept (`lost`): a command whose product is its output (`config`, `report`) reports it
in one line; a reader that closed a pipe on purpose (EPIPE) is not an error.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Optional


class GuardedStream:
    """A text stream that forwards to `stream` until a write fails, then to /dev/null."""

    def __init__(self, stream, name: str, on_lost: Optional[Callable[[str, OSError], None]] = None):
        self._stream, self.name, self._on_lost = stream, name, on_lost
        self.error: Optional[OSError] = None

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as e:
            self._lost(e)
            return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            self._lost(e)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _lost(self, e: OSError) -> None:
        first = self.error is None
        if first:
            self.error = e
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
            self._stream.flush()   # what was buffered goes to /dev/null: no error left at exit
        except (OSError, ValueError):
            pass
        if first and self._on_lost is not None:
            self._on_lost(self.name, e)


def guard(on_lost: Optional[Callable[[str, OSError], None]] = None) -> None:
    """Guard this process's own stdout and stderr; `on_lost(name, error)` runs at a stream's
    first failure. Streams a caller replaced (a test's capture, an embedding program) are
    theirs and stay as they are."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, GuardedStream):   # guarded already: only the reaction changes
            stream._on_lost = on_lost
        elif stream is not None and stream is getattr(sys, f"__{name}__"):
            setattr(sys, name, GuardedStream(stream, name, on_lost))


def lost(name: str = "stdout") -> Optional[OSError]:
    """The first write error of a guarded stream, after flushing what it holds."""
    stream = getattr(sys, name)
    if not isinstance(stream, GuardedStream):
        return None
    stream.flush()
    return stream.error


def reader_left(e: Optional[OSError]) -> bool:
    """A closed pipe: the reader took what it wanted (`| head`). Not an error."""
    return e is not None and e.errno == errno.EPIPE


def say_lost(name: str, e: OSError) -> None:
    """For a command whose product is on disk: one line on stderr (when stderr still works)
    that its stdout is gone and it goes on."""
    if name == "stdout" and not reader_left(e):
        print(f"stdout: cannot write ({e.strerror or e}); going on without it", file=sys.stderr, flush=True)
