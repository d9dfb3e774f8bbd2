"""The two errors of a run directory: a file that could not be written, and a directory that
cannot take the run."""
from __future__ import annotations

from pathlib import Path

from qgm_ray.errors import ConfigError


class WriteError(Exception):
    """A file of the run could not be written (disk full, read-only, ...). One line."""

    def __init__(self, path: Path, err: OSError):
        self.path, self.errno = Path(path), err.errno
        super().__init__(f"cannot write {path}: {err.strerror or err}")


class OutputError(ConfigError):
    """The output directory cannot take the run (full, read-only, not a directory): exit 2,
    printed as `error: ...` (no config key is wrong)."""
