"""The one writer of a run directory: an exclusive lock on the directory itself (flock on its
file descriptor), which the kernel drops when the process dies, however it dies. The lock is on
the directory's own inode (no lock file to leave behind), taken with a descriptor that child
processes (Ray's) do not inherit."""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional

from qgm_ray.outputs.errors import OutputError


class DirLock:
    """The lock on the directory at `path`, held by this process or not."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def take(self) -> None:
        """Hold the lock, or refuse in one line (another process holds it)."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"{self.path} is in use by a live run (another process is writing to it); "
                                  f"wait for it to end, or stop it first") from None
            raise
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __del__(self):   # a Run opened and never executed must not hold its directory
        self.release()

    def locked_by_another(self) -> bool:
        if self._lock_fd is not None or not self.path.is_dir():
            return False
        try:
            self.take()
        except OutputError:
            return True
        except OSError:
            return False
        self.release()
        return False
