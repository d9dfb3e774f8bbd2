"""The run directory: config.yaml, partition.csv, metrics.csv, summary.json, checkpoints/.
metrics.csv and checkpoints/ have modules of their own (qgm_ray.runner.metrics_file,
qgm_ray.runner.checkpoints); this one holds the directory, its lock and its whole files.

One writer: the live run holds an exclusive lock on the directory itself (flock on its file
descriptor), which the kernel drops when the process dies, however it dies; a second run or a
`--resume` of a live run is refused. Every whole file (config.yaml, partition.csv, summary.json,
checkpoints, a truncated metrics.csv) is written to a temporary file and renamed (`atomic_write`),
so a reader never sees half a file and a failed write (a full disk) leaves no `.tmp` behind. A
write that fails raises `WriteError`, one line naming the file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

from qgm_ray.errors import ConfigError

TMP_SUFFIX = ".tmp"


class WriteError(Exception):
    """A file of the run could not be written (disk full, read-only, ...). One line."""

    def __init__(self, path: Path, err: OSError):
        self.path, self.errno = Path(path), err.errno
        super().__init__(f"cannot write {path}: {err.strerror or err}")


class OutputError(ConfigError):
    """The output directory cannot take the run (full, read-only, not a directory): exit 2,
    printed as `error: ...` (no config key is wrong)."""


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
        if RunDir(p).locked_by_another():
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


def _unlink_quietly(p: Path) -> None:
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
        _unlink_quietly(tmp)
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


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._lock_fd: Optional[int] = None

    def create(self) -> bool:
        """Make the directory (and checkpoints/); True when this call made the run directory
        (mkdir says so atomically: of two racing runs only one made it)."""
        missing = [q for q in self.path.absolute().parents if not q.exists()]
        self._made_parents = missing   # removed again by discard() when empty (innermost first)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir()
                made = True
            except FileExistsError:
                made = False
            self.checkpoints.mkdir(exist_ok=True)
        except OSError as e:
            raise OutputError(f"--output-dir / output_dir {str(self.path)!r}: cannot make it: "
                              f"{e.strerror or e}") from None
        return made

    # ------------------------------------------------------------ one writer
    def lock(self) -> None:
        """Become the directory's one writer, or refuse in one line. The lock is on the
        directory's own inode (no lock file to leave behind), taken with a descriptor that child
        processes (Ray's) do not inherit, and dropped by the kernel when this process dies.
        A directory holding a link out of itself is refused too (check_no_links)."""
        if self._lock_fd is not None:
            return
        self._flock()
        try:
            check_no_links(self.path)   # the one writer checks where its writes would land
        except OutputError:
            self.unlock()
            raise

    def _flock(self) -> None:
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

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __del__(self):   # a Run opened and never executed must not hold its directory
        self.unlock()

    def locked_by_another(self) -> bool:
        if self._lock_fd is not None or not self.path.is_dir():
            return False
        try:
            self._flock()
        except OutputError:
            return True
        except OSError:
            return False
        self.unlock()
        return False

    def claim(self, config_text: str) -> None:
        """Write config.yaml of a new run, failing if it is there already: of two runs started
        on one directory at once, only the first gets it. Written whole to a temporary file,
        then hard-linked into place (a link, unlike a rename, fails if the name exists)."""
        target = self.path / "config.yaml"
        tmp = self.path / f"config.yaml.{os.getpid()}{TMP_SUFFIX}"
        try:
            tmp.write_text(config_text)
            os.link(tmp, target)
        except FileExistsError:
            raise OutputError(f"--output-dir / output_dir {str(self.path)!r} was just taken by another run; "
                              f"name a new directory") from None
        except OSError as e:
            raise WriteError(target, e) from None
        finally:
            _unlink_quietly(tmp)

    def remove_stale_tmp(self) -> list[Path]:
        """Temporary files of a writer that died mid-write (SIGKILL): only the lock holder may."""
        stale = [p for d in (self.path, self.checkpoints) if d.is_dir() for p in d.iterdir()
                 if p.name.endswith(TMP_SUFFIX) and p.is_file()]
        for p in stale:
            _unlink_quietly(p)
        return stale

    def discard(self, made: bool, names: tuple = ("config.yaml", "partition.csv", "metrics.csv",
                                                   "summary.json", "checkpoints")) -> None:
        """Undo a new run that wrote nothing worth keeping: the whole directory when this run
        made it, else only the files a run writes (a pre-existing empty directory stays)."""
        if made:
            shutil.rmtree(self.path, ignore_errors=True)
            for q in getattr(self, "_made_parents", []):   # runs/ made for this run alone
                try:
                    q.rmdir()
                except OSError:
                    break
            return
        for name in names:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                _unlink_quietly(p)

    # ------------------------------------------------------------ the files of runner/ modules
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"     # qgm_ray.runner.metrics_file reads and writes it

    # ------------------------------------------------------------ summary / config / partition
    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")

    def read_summary(self) -> Optional[dict]:
        """summary.json, or None when there is none or it is not JSON (a reader must not crash)."""
        p = self.path / "summary.json"
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def write_config(self, text: str) -> None:
        p = self.path / "config.yaml"
        if not (p.is_file() and p.read_text() == text):  # a resume that changes nothing rewrites nothing
            atomic_write_text(p, text)

    def write_file(self, name: str, write: Callable[[Path], None]) -> None:
        """A whole file, written by `write(tmp)` and renamed into place."""
        atomic_write(self.path / name, write)

    # ------------------------------------------------------------ before a resume
    def check_layout(self) -> None:
        """Before a resume writes anything: the places it will write are what they should be."""
        for name in ("metrics.csv", "summary.json", "config.yaml", "partition.csv"):
            p = self.path / name
            if p.exists() and not p.is_file():
                raise OutputError(f"{p} is not a file; move it away")
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise OutputError(f"{self.checkpoints} is not a directory; move it away")
