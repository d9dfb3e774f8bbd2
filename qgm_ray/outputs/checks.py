"""Where a run may write, checked before anything starts: a new run's directory of its own,
a writable place, no symbolic link out of the run directory."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from qgm_ray.outputs.errors import OutputError
from qgm_ray.outputs.lock import DirLock


def default_run_dir(name: str, root: str = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    i = 1
    while path.exists():  # two runs in the same second must not share a directory
        path = Path(root) / f"{name}-{stamp}-{i}"
        i += 1
    return path


def check_new_run_dir(path: str | Path, resume_cmd: str | None = None, ignore: tuple = ()) -> None:
    """A new run (or sweep) gets a directory of its own: refuse a file, or a directory that
    already holds anything (another run's metrics, checkpoints, config) - never mix or delete.
    Also refuse, before any actor starts, a directory that cannot be made: a parent that is a
    file, a read-only or unwritable place. resume_cmd: what continues it (default: the run's)."""
    from qgm_ray.command import command
    resume_cmd = resume_cmd or f"{command()} --resume"
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"--output-dir / output_dir {str(p)!r} is a file, not a directory; name a new directory")
    if p.is_dir():
        if DirLock(p).locked_by_another():
            raise OutputError(f"--output-dir / output_dir {str(p)!r} is in use by a live run; name a new directory")
        if any(q.name not in ignore for q in p.iterdir()):
            raise OutputError(f"--output-dir / output_dir {str(p)!r} is not empty; continue the run there with "
                              f"`{resume_cmd} {p}`, or name a new directory")
    check_writable(p, "--output-dir / output_dir")


def check_writable(p: Path, what: str) -> None:
    """`p` exists as a writable directory, or can be made (see writable_problem)."""
    why = writable_problem(p)
    if why:
        raise OutputError(f"{what} {str(Path(os.path.abspath(p)))!r}: {why}; name another place")


def writable_problem(p: Path) -> Optional[str]:
    """None when `p` exists as a writable directory or can be made: its nearest existing ancestor
    is a writable directory; else what is in the way, in words. (os.access does not see a
    read-only filesystem as root: statvfs does.)"""
    q = Path(os.path.abspath(p))
    while not q.exists() and not q.is_symlink():
        q = q.parent
    if not q.is_dir():
        return f"{str(q)!r} is a file, not a directory"
    if _read_only_fs(q):
        return f"{str(q)!r} is on a read-only filesystem"
    if not os.access(q, os.W_OK | os.X_OK):
        return f"{str(q)!r} is not writable by this user"
    return None


def check_no_links(path: Path) -> None:
    """A run writes only inside its own directory: an entry of it, or of its checkpoints/, that
    is a symbolic link (checkpoints/ pointing into another run, metrics.csv into another file)
    would carry a resume's writes and deletions elsewhere. Refuse it in one line; follow none."""
    path = Path(path)
    for d in (path, path / "checkpoints"):   # checkpoints/ itself is an entry of the first
        try:
            entries = list(os.scandir(d))
        except OSError:   # none there (yet): nothing to follow
            continue
        for e in entries:
            if e.is_symlink():
                raise OutputError(f"{e.path} is a symbolic link (to {os.readlink(e.path)}); a run writes only "
                                  f"inside its own directory: replace the link with what it points to, or move it away")


def _read_only_fs(p: Path) -> bool:
    try:
        return bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except OSError:
        return False
