"""The run directory: config.yaml, partition.csv, metrics.csv, summary.json, checkpoints/.

metrics.csv is appended and flushed row by row so a crash keeps every evaluation done so far;
summary.json and checkpoints are written to a temporary file and renamed, so a reader never
sees half a file.
"""
from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path
from typing import Optional

import torch

from qgm_ray.errors import ConfigError

METRIC_COLUMNS = ["round", "epoch", "lr", "train_loss", "test_accuracy", "local_test_accuracy",
                  "consensus_distance", "bytes_sent", "wall_seconds", "n_clients", "test_loss", "bytes_cross_node"]

_CKPT = re.compile(r"^round_(\d+)\.pt$")


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
    already holds anything (another run's metrics, checkpoints, config) - never mix or delete."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"--output-dir / output_dir {str(p)!r} is a file, not a directory; name a new directory")
    if p.is_dir() and any(q.name not in ignore for q in p.iterdir()):
        raise ConfigError(f"--output-dir / output_dir {str(p)!r} is not empty; continue the run there with "
                          f"`{resume_cmd} {p}`, or name a new directory")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    def create(self) -> "RunDir":
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def claim(self, config_text: str) -> None:
        """Write config.yaml of a new run, failing if it is there already: of two runs started
        on one directory at once, only the first gets it."""
        try:
            fd = os.open(self.path / "config.yaml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ConfigError(f"--output-dir / output_dir {str(self.path)!r} was just taken by another run; "
                              f"name a new directory") from None
        with os.fdopen(fd, "w") as f:
            f.write(config_text)

    # ------------------------------------------------------------ metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def append_metrics(self, row: dict) -> None:
        new = not self.metrics_path.exists()
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def test_accuracies(self) -> list[float]:
        """test_accuracy of every evaluation written so far, in order."""
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path, newline="") as f:
            return [float(r["test_accuracy"]) for r in csv.DictReader(f)]

    def truncate_metrics_after(self, round_: int) -> None:
        """On resume, evaluations after the checkpoint are redone: drop their rows."""
        if not self.metrics_path.exists():
            return
        with open(self.metrics_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["round"]) <= round_]
        tmp = self.metrics_path.with_name("metrics.csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, self.metrics_path)

    # ------------------------------------------------------------ summary / config
    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")

    def read_summary(self) -> Optional[dict]:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    def write_config(self, text: str) -> None:
        atomic_write_text(self.path / "config.yaml", text)

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, round_: int, payload: dict, keep: int) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        path = self.checkpoints / f"round_{round_:08d}.pt"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        for old in self.list_checkpoints()[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def list_checkpoints(self) -> list[Path]:
        if not self.checkpoints.exists():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir() if (m := _CKPT.match(p.name))]
        return [p for _, p in sorted(found)]

    def load_latest_checkpoint(self, log=print) -> Optional[dict]:
        """Newest checkpoint that loads; a truncated or corrupt one is reported and skipped."""
        for path in reversed(self.list_checkpoints()):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable file means: fall back
                log(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); falling back to the previous one")
        return None
