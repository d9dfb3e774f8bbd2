"""tracking.json in the run directory: the MLflow and W&B run ids, so a --resume goes on in the
same tracker runs."""
from __future__ import annotations

import json
from pathlib import Path

from qgm_ray.outputs import atomic_write_text


IDS_FILE = "tracking.json"          # the MLflow and W&B run ids of the run directory


def _read_ids(run_dir: Path) -> dict:
    try:
        ids = json.loads((run_dir / IDS_FILE).read_text())
        return ids if isinstance(ids, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_ids(run_dir: Path, ids: dict) -> None:
    atomic_write_text(run_dir / IDS_FILE, json.dumps(ids, indent=1, sort_keys=True) + "\n")
