"""Whole files written atomically: to a temporary file, then renamed into place, so a reader
never sees half a file and a failed write (a full disk) leaves no `.tmp` behind; a write that
fails raises `WriteError`, one line naming the file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from qgm_ray.outputs.errors import WriteError

TMP_SUFFIX = ".tmp"


def unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename tmp -> path; on any failure, no tmp and the old `path` stay."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        unlink_quietly(tmp)
        cause = _os_error(e)
        if cause is not None:
            raise WriteError(path, cause) from None
        raise


def _os_error(e: BaseException) -> Optional[OSError]:
    """The OSError behind `e`: torch.save reports a full disk as a RuntimeError ("unexpected
    pos") raised while handling the OSError of the file object it wrote to."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))
