"""The run directory: config.yaml, partition.csv, metrics.csv, summary.json, checkpoints/.
metrics.csv and checkpoints/ have modules of their own (qgm_ray.runner.metrics_file,
qgm_ray.runner.checkpoints); this package holds the directory, its lock and its whole files.

One writer: the live run holds an exclusive lock on the directory itself (lock.py); a second
run or a `--resume` of a live run is refused. Every whole file (config.yaml, partition.csv,
summary.json, checkpoints, a truncated metrics.csv) is written to a temporary file and renamed
(writes.py: `atomic_write`). Where a run may write is checked before anything starts
(checks.py); errors.py holds the two errors (`WriteError`, `OutputError`).

This module holds `RunDir` and re-exports every name imported from qgm_ray.outputs.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from qgm_ray.outputs.checks import (check_new_run_dir, check_no_links, check_writable, default_run_dir,
                                    writable_problem)
from qgm_ray.outputs.errors import OutputError, WriteError
from qgm_ray.outputs.lock import DirLock
from qgm_ray.outputs.writes import TMP_SUFFIX, atomic_write, atomic_write_text, unlink_quietly

__all__ = ["OutputError", "RunDir", "TMP_SUFFIX", "WriteError", "atomic_write", "atomic_write_text",
           "check_new_run_dir", "check_no_links", "check_writable", "default_run_dir", "writable_problem"]


class RunDir:
    """A run's directory: its places, its one writer, its whole files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._lock = DirLock(self.path)

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

    def lock(self) -> None:
        """Become the directory's one writer, or refuse in one line (lock.py). A directory
        holding a link out of itself is refused too (check_no_links)."""
        if self._lock.held:
            return
        self._lock.take()
        try:
            check_no_links(self.path)   # the one writer checks where its writes would land
        except OutputError:
            self.unlock()
            raise

    def unlock(self) -> None:
        self._lock.release()

    def locked_by_another(self) -> bool:
        return self._lock.locked_by_another()

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
            unlink_quietly(tmp)

    def remove_stale_tmp(self) -> list[Path]:
        """Temporary files of a writer that died mid-write (SIGKILL): only the lock holder may."""
        stale = [p for d in (self.path, self.checkpoints) if d.is_dir() for p in d.iterdir()
                 if p.name.endswith(TMP_SUFFIX) and p.is_file()]
        for p in stale:
            unlink_quietly(p)
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
                unlink_quietly(p)

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"     # qgm_ray.runner.metrics_file reads and writes it

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

    def check_layout(self) -> None:
        """Before a resume writes anything: the places it will write are what they should be."""
        for name in ("metrics.csv", "summary.json", "config.yaml", "partition.csv"):
            p = self.path / name
            if p.exists() and not p.is_file():
                raise OutputError(f"{p} is not a file; move it away")
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise OutputError(f"{self.checkpoints} is not a directory; move it away")
