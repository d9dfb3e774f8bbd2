"""metrics.csv, a row per evaluation: the one module that writes it and reads it back (the
runner, a resume, report, the Python API, Tune).

The one file of a run that is appended (rewriting it for every row would cost O(rows)): each
row is flushed and fsynced, and a row that cannot be written whole is cut off again. Cutting it
back to a round (a resume, a recovery) rewrites it whole, through a temporary file.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Optional

from qgm_ray.outputs import OutputError, RunDir, WriteError, atomic_write

METRIC_COLUMNS = ["round", "epoch", "lr", "train_loss", "test_accuracy", "local_test_accuracy",
                  "consensus_distance", "bytes_sent", "wall_seconds", "n_clients", "test_loss", "bytes_cross_node",
                  "sim_seconds"]
# Columns written only by the runs that measure them (an asynchronous gossip run's staleness:
# runner/timeline.py), after METRIC_COLUMNS, so every other run's file keeps its columns.
OPTIONAL_COLUMNS = ["staleness_mean", "staleness_max"]
# What a reader can rely on in every metrics.csv this program wrote, whatever its version.
REQUIRED = ("round", "test_accuracy")

def _quiet(msg: str) -> None:
    """The default `log`: says nothing."""


class MetricsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def of(cls, run_dir: str | Path) -> "MetricsFile":
        """The metrics file of a run directory."""
        return cls(RunDir(run_dir).metrics_path)

    def append(self, row: dict) -> None:
        """One row, whole or not at all (WriteError, one line)."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            if not new and self._bare_header() not in (None, columns_of(row)):
                # Rows truncated away (a resume or a recovery before the first evaluation) left
                # a header of their own: the rows to come write theirs, optional columns included.
                atomic_write(self.path, lambda tmp: Path(tmp).write_text(""))
                new = True
            with open(self.path, "a", newline="") as f:
                size = f.tell()
                try:
                    w = csv.DictWriter(f, fieldnames=columns_of(row), extrasaction="ignore")
                    if new:
                        w.writeheader()
                    w.writerow(row)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    f.truncate(size)  # no torn row: the file ends with the last whole one
                    raise
        except OSError as e:
            raise WriteError(self.path, e) from None

    def _bare_header(self) -> Optional[list[str]]:
        """The columns of a file that holds a header and no row, else None."""
        with open(self.path, newline="") as f:
            first = f.readline()
            if f.read(1):
                return None
        return next(csv.reader([first]), None)

    def read(self, log: Callable[[str], None] = print, required: tuple = REQUIRED) -> list[dict]:
        """Every row, checked: OutputError (one line) if it is not a metrics file this program
        wrote or lacks a `required` column. A last line without its newline is a row torn by a
        crash: dropped, with a line to `log`. No file: no rows."""
        p = self.path
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
            raise OutputError(f"{p}: a binary file, not a CSV table written by qgm-ray; move it away or "
                              f"start a new run")
        if not text.endswith("\n") and "\n" in text:   # the header is whole: only the last row was cut
            text = text[:text.rfind("\n") + 1]
            log(f"{p}: dropped its last line, cut short by a crash")
        lines = text.splitlines()
        header = next(csv.reader(lines[:1]))
        missing = sorted((c for c in set(REQUIRED + tuple(required)) if c not in header), key=_column_order)
        if missing:
            raise OutputError(f"{p}: has no {', '.join(missing)} column: not a metrics file written by qgm-ray; "
                              f"move it away or start a new run")
        rows = list(csv.DictReader(lines))
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

    def accuracies(self) -> list[float]:
        """test_accuracy of every row, in order."""
        return [float(r["test_accuracy"]) for r in self.read(log=_quiet)]

    def truncate_after(self, round_: int) -> None:
        """Evaluations after `round_` are redone (a resume, a recovery): drop their rows."""
        if not self.path.exists():
            return
        rows = [r for r in self.read(log=_quiet) if int(r["round"]) <= round_]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns_of(rows[0] if rows else {}), extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
        atomic_write(self.path, write)

    def frame(self, required: tuple = REQUIRED, log: Callable[[str], None] = _quiet):
        """The checked rows as a pandas DataFrame, every column as numbers (an empty cell, of a
        column an older version did not write, is NaN); OutputError (one line) for a cell that
        is not a number. No file or no rows: an empty DataFrame."""
        import pandas as pd
        rows = self.read(log=log, required=required)
        df = pd.DataFrame(rows)
        for c in df.columns:
            values = pd.to_numeric(df[c].mask(df[c] == ""), errors="coerce")
            bad = df[c][values.isna() & ~df[c].map(_empty_or_number)]
            if len(bad):
                raise OutputError(f"{self.path}: column {c} holds {str(bad.iloc[0])[:40]!r}, not a number")
            df[c] = values
        return df


def columns_of(row: dict) -> list[str]:
    """The header of a file holding rows like this one."""
    return METRIC_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in row]


def _column_order(name: str) -> tuple:
    return (METRIC_COLUMNS.index(name), "") if name in METRIC_COLUMNS else (len(METRIC_COLUMNS), name)


def _empty_or_number(cell) -> bool:
    try:
        return cell == "" or isinstance(float(cell), float)   # float() also reads "nan" and "inf"
    except (TypeError, ValueError):
        return False


def read_history(run_dir: str | Path) -> Optional["object"]:
    """A run directory's metrics.csv as a DataFrame, for a reader that lists many runs (a
    sweep's histories): None when it is missing or not a metrics file."""
    try:
        return MetricsFile.of(run_dir).frame()
    except OutputError:
        return None
