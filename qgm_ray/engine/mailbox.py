"""Payloads between the ClientActors of one node through shared memory, so that one actor
call can run many rounds (engine/fused.py plans them; ClientActor.rounds runs them).

Each actor owns an outbox: a file in /dev/shm (RAM) holding the payload rows other actors mix,
in two slots (round t writes slot t % 2), and a FIFO, its inbox of notices. A round:

    write my exported rows of round t into slot t % 2, notify DATA(t) to every reader;
    wait for DATA(t) from every source actor, mix their rows, ACK(t) to each of them.

A writer reuses slot t % 2 in round t only once every reader has acknowledged round t - 2, so
a slow reader never sees a row overwritten. The pipe also orders the memory: what a writer
stored before its notice is visible to a reader that has read the notice, on any CPU (the
kernel's pipe lock is the barrier), so no spin on shared flags and no sleeping poll: a waiting
actor blocks in select() until a notice comes.

Failures: an actor whose call raises sends ABORT to every peer, which then raise `PeerLost`;
a peer whose process is gone (SIGKILL, OOM) is found by its pid when a wait has heard nothing
for `POLL_S`. The engine opens every actor's outbox, has every actor `attach` to its peers',
then has every actor `unlink` its names before the rounds run, so a process killed during the
rounds leaves nothing in /dev/shm (closing also removes the names of peers lost before that).
The files' names, and the sweep of those a run killed whole left, are engine/outbox_files.py's.
"""
from __future__ import annotations

import mmap
import os
import select
import struct
from typing import Optional, Sequence

import numpy as np

from qgm_ray.engine.outbox_files import _HEADER, _alive, _paths, _remove, new_prefix, shm_dir, sweep

__all__ = ["ABORT", "ACK", "DATA", "POLL_S", "Mailbox", "PeerLost", "new_prefix", "open_for", "shm_dir", "sweep"]

DATA, ACK, ABORT = 1, 2, 3
_NOTICE = struct.Struct("<iiq")   # kind, actor, round: 16 bytes, written atomically (< PIPE_BUF)
POLL_S = 0.25                     # how long a wait trusts silence before it checks its peers' pids


class PeerLost(RuntimeError):
    """A peer of this mailbox failed (its call raised, or its process is gone): this call stops;
    the engine recovers the chunk as it does a lost actor."""


class Mailbox:
    """One actor's end: its outbox (`rows` exported rows of `width` float32 values) and its
    inbox, plus the actors it reads from (`sources`) and those that read from it (`readers`),
    for rounds `start`, `start` + 1, ... Made in three steps, each done by every actor before
    any takes the next: `Mailbox(...)` makes this actor's files, `attach()` opens the peers',
    `unlink()` removes this actor's names (the open files live on)."""

    def __init__(self, prefix: str, me: int, rows: int, width: int, sources: Sequence[int], readers: Sequence[int],
                 start: int):
        self.prefix, self.me, self.width = prefix, int(me), int(width)
        self.sources = sorted(int(b) for b in sources)
        self.readers = sorted(int(b) for b in readers)
        self.peers = sorted(set(self.sources) | set(self.readers))
        self.broken = False
        self._closed = False
        rows_path, fifo_path = _paths(prefix, me)
        rows = max(int(rows), 1)   # an actor that exports nothing (it only reads) still maps one row
        size = _HEADER + 2 * rows * self.width * 4
        fd = os.open(rows_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            # Reserve the pages now: a full /dev/shm (a container's is often 64 MB) then fails
            # here with ENOSPC, not later with a SIGBUS in the middle of a round.
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except OSError:
            os.unlink(rows_path)
            raise
        finally:
            os.close(fd)
        np.frombuffer(self._map, dtype=np.int64, count=1)[0] = os.getpid()
        self.outbox = np.frombuffer(self._map, dtype=np.float32, offset=_HEADER).reshape(2, rows, self.width)
        os.mkfifo(fifo_path, 0o600)
        # Read-write: the FIFO never sees end-of-file and opening it never blocks.
        self._inbox = os.open(fifo_path, os.O_RDWR | os.O_NONBLOCK)
        self._unlinked = False
        self._pending = b""
        # Rounds before `start` count as published and mixed: nothing of theirs is in the slots.
        self.written = {b: start - 1 for b in self.sources}   # last round each source has published
        self.acked = {b: start - 2 for b in self.readers}     # last round each reader has mixed
        self.views: dict = {}     # source actor -> its outbox (2, rows, width), read-only
        self.pids: dict = {}
        self.to: dict = {}        # peer -> write end of its FIFO

    def attach(self) -> None:
        """Open the peers' outboxes (once every actor has made its own). A peer whose names are
        gone, or whose inbox has no reader, ended after it made them (its process died, and a
        process that exits closes its outbox, which removes its peers' names too): PeerLost,
        so the engine recovers the chunk as it does a lost actor."""
        for b in self.peers:
            if b in self.to:
                continue
            try:
                self._attach(b)
            except OSError as e:   # FileNotFoundError; ENXIO: a FIFO whose reader is gone
                raise PeerLost(f"actor {b}'s outbox is gone before the chunk began: {e.strerror or e}") from None

    def _attach(self, b: int) -> None:
        rows_path, fifo_path = _paths(self.prefix, b)
        fd = os.open(rows_path, os.O_RDONLY)
        try:
            m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self.pids[b] = int(np.frombuffer(m, dtype=np.int64, count=1)[0])
        if b in self.sources:
            self.views[b] = np.frombuffer(m, dtype=np.float32, offset=_HEADER).reshape(2, -1, self.width)
        w = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(w, True)   # a full pipe waits for its reader rather than dropping a notice
        self.to[b] = w

    def unlink(self) -> None:
        """Remove this actor's file names once every peer has attached (idempotent)."""
        if not self._unlinked:
            _remove(self.prefix, self.me)
            self._unlinked = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.unlink()
        # A peer that died before its first round left its names: whoever closes last removes
        # them (a name nobody opens again; the files go when the last holder closes them).
        for b in self.peers:
            _remove(self.prefix, b)
        for w in self.to.values():
            os.close(w)
        os.close(self._inbox)
        self.views, self.to, self.outbox = {}, {}, None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def publish(self, t: int, rows: np.ndarray) -> None:
        """Write this actor's exported rows of round t ((rows, width) float32) and tell its
        readers."""
        self.wait(lambda: all(a >= t - 2 for a in self.acked.values()))
        np.copyto(self.outbox[t % 2, :len(rows)], rows)
        for b in self.readers:
            self._send(b, DATA, t)

    def received(self, t: int, order: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Round t's rows at `order` [(source actor, row in its outbox)], once all are there."""
        self.wait(lambda: all(self.written[b] >= t for b, _ in order))
        return [self.views[b][t % 2, r] for b, r in order]

    def consumed(self, t: int) -> None:
        """Round t's received rows are mixed: their writers may reuse the slot."""
        for b in self.sources:
            self._send(b, ACK, t)

    def abort(self) -> None:
        """This actor's call failed: its peers stop waiting for it."""
        self.broken = True
        for b in self.to:
            try:
                self._send(b, ABORT, 0)
            except PeerLost:
                pass

    def _send(self, b: int, kind: int, t: int) -> None:
        try:
            os.write(self.to[b], _NOTICE.pack(kind, self.me, t))
        except BrokenPipeError:   # nobody reads that FIFO any more: the peer closed or died
            if kind == ACK:   # a peer that has finished its rounds needs none
                return
            self.broken = True
            raise self._lost(b) if not _alive(self.pids[b]) else PeerLost(f"ClientActor {b}'s mailbox is closed") from None

    def _lost(self, b: int) -> PeerLost:
        return PeerLost(f"the process of ClientActor {b} (pid {self.pids[b]}) is gone")

    def wait(self, ready) -> None:
        while not ready():
            if self.broken:
                raise PeerLost("a peer's call failed earlier in this chunk")
            got, _, _ = select.select([self._inbox], [], [], POLL_S)
            if got:
                self._drain()
            else:
                dead = [b for b, pid in self.pids.items() if not _alive(pid)]
                if dead:
                    self.broken = True
                    raise self._lost(dead[0])

    def _drain(self) -> None:
        try:
            data = self._pending + os.read(self._inbox, 1 << 16)
        except BlockingIOError:
            return
        whole = len(data) - len(data) % _NOTICE.size
        self._pending = data[whole:]
        for kind, b, t in _NOTICE.iter_unpack(data[:whole]):
            if kind == DATA:
                self.written[b] = max(self.written[b], t)
            elif kind == ACK:
                self.acked[b] = max(self.acked[b], t)
            elif kind == ABORT:
                self.broken = True
                raise PeerLost(f"ClientActor {b}'s call failed")


def open_for(prefix: str, me: int, plan: dict, start: int) -> Optional[Mailbox]:
    """This actor's mailbox for its fused plan (engine/fused.py) from round `start`, or None
    when it exchanges with no other actor."""
    sources = sorted({b for b, _ in plan["at"]})
    if not sources and not plan["readers"]:
        return None
    sweep(os.path.dirname(prefix) or ".")
    return Mailbox(prefix, me, len(plan["export"]), plan["width"], sources, plan["readers"], start)
