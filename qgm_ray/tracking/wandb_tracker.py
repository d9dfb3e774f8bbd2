"""The Weights & Biases tracker: one W&B run per run directory, its files under <run dir>/wandb/."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

from qgm_ray.tracking.values import ENDS, row_values


class _WandB:
    """One W&B run per run directory, its files under <run dir>/wandb/, grouped by the config's
    name (a sweep's trials share it). `round` is every metric's x axis (define_metric), not W&B's
    own step, so the rows a replay redoes are taken rather than dropped as steps gone back."""

    name = "wandb"

    def __init__(self, cfg, run_dir: Path, columns: list, resume_round: Optional[int], ids: dict):
        import wandb
        t = cfg.tracking.wandb
        self.columns = columns
        known = (ids.get(self.name) or {}).get("id")
        self.id = known if resume_round is not None and known else uuid.uuid4().hex[:16]
        # console off: the run's stdout and stderr stay ours; no system metrics, requirements or
        # code; no latest-run link (W&B's service still links its own debug log, kept in its
        # cache directory, into the W&B run's logs/).
        settings = wandb.Settings(console="off", x_disable_stats=True, x_save_requirements=False,
                                  save_code=False, symlink=False, silent=True)
        self.run = wandb.init(project=t.project, mode=t.mode, dir=str(run_dir), id=self.id, resume="allow",
                              name=run_dir.name, group=cfg.name, config=cfg.to_dict(), settings=settings,
                              reinit="create_new")
        self.run.define_metric("round")
        self.run.define_metric("*", step_metric="round")

    def ids(self) -> Optional[dict]:
        return {"id": self.id}

    def log(self, row: dict) -> None:
        self.run.log(row_values(row, self.columns))

    def rewind(self, round_: int) -> None:
        pass   # the replayed rows are logged again against their rounds

    def close(self, status: str) -> None:
        self.run.finish(exit_code=ENDS.get(status, ENDS["failed"])[2])

    def abandon(self) -> None:
        self.run.finish(exit_code=ENDS["failed"][2])
