"""The mailboxes' files (engine/mailbox.py) in /dev/shm: where they live, how one chunk's are
named, how an actor's names are removed, and the sweep of those a run killed whole left behind.

An outbox's rows file begins with its owner's pid (`_HEADER`): a peer that has heard nothing
for a while, and a sweep, ask whether that process is still alive (`_alive`).
"""
from __future__ import annotations

import os
import re
import tempfile
import uuid

_HEADER = 8                       # the owner's pid (int64) before the rows


def shm_dir() -> str:
    """Where outboxes live: RAM-backed /dev/shm where there is one, else the temp directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _paths(prefix: str, actor: int) -> tuple[str, str]:
    return f"{prefix}-{actor}.rows", f"{prefix}-{actor}.fifo"


def new_prefix() -> str:
    """The names of one chunk's outboxes: `<prefix>-<actor>.rows` and `.fifo`."""
    return os.path.join(shm_dir(), f"qgm-{uuid.uuid4().hex[:16]}")


_NAME = re.compile(r"(qgm-[0-9a-f]{16})-(\d+)\.rows")   # an outbox's rows file, as new_prefix names it


def _remove(prefix: str, actor: int) -> None:
    """Remove an actor's outbox names (the files live on while anyone holds them open)."""
    for path in _paths(prefix, actor):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def sweep(directory: str) -> list[str]:
    """Remove the outboxes in `directory` whose owner process is gone: what a run killed whole
    (its driver, coordinator and actors at once) between making its outboxes and unlinking
    them left behind. Each actor sweeps its node when it makes an outbox. Returns the removed."""
    removed = []
    for name in os.listdir(directory):
        m = _NAME.fullmatch(name)
        if m is None:
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                pid = int.from_bytes(f.read(_HEADER), "little")
        except OSError:
            continue
        if pid > 0 and not _alive(pid):   # 0: an outbox being made, its owner not yet written
            _remove(os.path.join(directory, m.group(1)), int(m.group(2)))
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")   # a killed process its parent has not reaped yet is gone
    except FileNotFoundError:
        return False
    except OSError:   # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
