"""The run directory: config.yaml, partition.csv, metrics.csv, summary.json, checkpoints/.

One writer: the live run holds an exclusive lock on the directory itself (flock on its file
descriptor), which the kernel drops when the process dies, however it dies; a second run or a
`--resume` of a live run is refused. Every whole file (config.yaml, partition.csv, summary.json,
checkpoints, a truncated metrics.csv) is written to a temporary file and renamed, so a reader
never sees half a file and a failed write (a full disk) leaves no `.tmp` behind. metrics.csv is
the one file appended (rewriting it for every row would cost O(rows)): each row is flushed and
fsynced, and a row that cannot be written whole is cut off again. A write that fails raises
`WriteError`, one line naming the file.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from qgm_ray.errors import ConfigError

METRIC_COLUMNS = ["round", "epoch", "lr", "train_loss", "test_accuracy", "local_test_accuracy",
                  "consensus_distance", "bytes_sent", "wall_seconds", "n_clients", "test_loss", "bytes_cross_node"]

_CKPT = re.compile(r"^round_(\d+)\.pt$")
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


def check_new_run_dir(path: str | Path, resume_cmd: str = "python main.py --resume", ignore: tuple = ()) -> None:
    """A new run (or sweep) gets a directory of its own: refuse a file, or a directory that
    already holds anything (another run's metrics, checkpoints, config) - never mix or delete.
    Also refuse, before any actor starts, a directory that cannot be made: a parent that is a
    file, a read-only or unwritable place."""
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

    # ------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def append_metrics(self, row: dict) -> None:
        new = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        try:
            with open(self.metrics_path, "a", newline="") as f:
                size = f.tell()
                try:
                    w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
                    if new:
                        w.writeheader()
                    w.writerow(row)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    f.truncate(size)  # no torn row: the file ends with the last whole one
                    raise
        except OSError as e:
            raise WriteError(self.metrics_path, e) from None

    def read_metrics(self, log=print) -> list[dict]:
        """Every row of metrics.csv, checked: ConfigError (one line) if it is not a metrics file
        this program wrote. A last line without its newline is a row torn by a crash: dropped."""
        p = self.metrics_path
        if not p.exists():
            return []
        if not p.is_file():
            raise OutputError(f"{p} is not a file")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise OutputError(f"{p}: unreadable ({type(e).__name__}); move it away or start a new run") from None
        if not text:
            return []
        if "\0" in text:
            raise OutputError(f"{p}: a binary file, not a metrics file written by qgm-ray; move it away or "
                              f"start a new run")
        if not text.endswith("\n") and "\n" in text:   # the header is whole: only the last row was cut
            text = text[:text.rfind("\n") + 1]
            log(f"{p}: dropped its last line, cut short by a crash")
        rows = list(csv.DictReader(text.splitlines()))
        header = next(csv.reader(text.splitlines()[:1]))
        missing = [c for c in ("round", "test_accuracy") if c not in header]
        if missing:
            raise OutputError(f"{p}: not a metrics file written by qgm-ray (no {', '.join(missing)} column); "
                              f"move it away or start a new run")
        last = 0
        for i, r in enumerate(rows, start=2):
            try:
                rnd = int(r["round"])
                float(r["test_accuracy"])
            except (TypeError, ValueError):
                raise OutputError(f"{p}, line {i}: not a metrics row (round={r.get('round')!r}, "
                                  f"test_accuracy={r.get('test_accuracy')!r}); move it away or start a new run") from None
            if rnd <= last:
                raise OutputError(f"{p}, line {i}: round {rnd} after round {last}: not a metrics file written by "
                                  f"one run; move it away or start a new run")
            last = rnd
        return rows

    def test_accuracies(self) -> list[float]:
        """test_accuracy of every evaluation written so far, in order."""
        try:
            return [float(r["test_accuracy"]) for r in self.read_metrics(log=lambda m: None)]
        except OutputError:
            return []

    def truncate_metrics_after(self, round_: int) -> None:
        """On resume, evaluations after the checkpoint are redone: drop their rows."""
        if not self.metrics_path.exists():
            return
        rows = [r for r in self.read_metrics(log=lambda m: None) if int(r["round"]) <= round_]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        atomic_write(self.metrics_path, write)

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

    # ------------------------------------------------------------ checkpoints
    def checkpoint_path(self, round_: int) -> Path:
        return self.checkpoints / f"round_{round_:08d}.pt"

    def save_checkpoint(self, round_: int, payload: dict, keep: int) -> Path:
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WriteError(self.checkpoints, e) from None
        path = self.checkpoint_path(round_)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:   # a file object: a full disk surfaces as its OSError
                torch.save(payload, f)
        atomic_write(path, write)
        for old in self.list_checkpoints()[:-keep]:
            _unlink_quietly(old)
        return path

    def list_checkpoints(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := _CKPT.match(p.name))]
        return [p for _, p in sorted(found)]

    def check_layout(self) -> None:
        """Before a resume writes anything: the places it will write are what they should be."""
        for name in ("metrics.csv", "summary.json", "config.yaml", "partition.csv"):
            p = self.path / name
            if p.exists() and not p.is_file():
                raise OutputError(f"{p} is not a file; move it away")
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise OutputError(f"{self.checkpoints} is not a directory; move it away")
        for p in self.list_checkpoints():
            if not p.is_file():
                raise OutputError(f"{p} is not a checkpoint file (a directory?); move it away")

    def iter_checkpoints(self, log=print) -> Iterator[tuple[Path, dict]]:
        """(path, payload) of every checkpoint that loads, newest first; a truncated or corrupt
        one is reported and skipped."""
        for path in reversed(self.list_checkpoints()):
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable file means: fall back
                log(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                    f"falling back to the previous one")
                continue
            yield path, payload

    def load_latest_checkpoint(self, log=print) -> Optional[dict]:
        """Newest checkpoint that loads."""
        return next((payload for _, payload in self.iter_checkpoints(log)), None)
