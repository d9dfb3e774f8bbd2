"""The MLflow tracker: one MLflow run per run directory, where tracking_uri points."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from qgm_ray.tracking.values import ENDS, flat_params, row_values


def absolute_uri(uri: Optional[str], cwd: Optional[Path] = None) -> Optional[str]:
    """An MLflow tracking URI that names a local place relative to the working directory
    (`mlruns`, `file:./mlruns`, `sqlite:///mlflow.db`), made absolute against `cwd`: a Tune
    trial runs in a directory of its own. Any other URI is returned as it is."""
    if uri is None:
        return None
    base = Path(cwd or os.getcwd())
    scheme, sep, rest = uri.partition(":")
    if uri == "databricks":   # MLflow's one URI without a scheme that is not a path
        return uri
    if not sep or len(scheme) == 1:   # a plain path (C: is a drive, not a scheme)
        return str(base / uri) if not Path(uri).is_absolute() else uri
    if scheme == "file" and not rest.startswith("//"):
        return (base / rest).as_uri() if not Path(rest).is_absolute() else Path(rest).as_uri()
    if scheme == "sqlite" and rest.startswith("///") and not rest.startswith("////") and rest[3:] not in ("", ":memory:"):
        return f"sqlite:///{base / rest[3:]}"
    return uri


class _MLflow:
    """One MLflow run per run directory, through MlflowClient (no global active run: a Tune
    process that runs trial after trial keeps none). Metric steps are rounds; params are the
    resolved config's dotted keys."""

    name = "mlflow"

    def __init__(self, cfg, run_dir: Path, columns: list, resume_round: Optional[int], ids: dict):
        from mlflow.tracking import MlflowClient
        t = cfg.tracking.mlflow
        self.columns = columns
        self.client = MlflowClient(tracking_uri=t.tracking_uri)
        known = ids.get(self.name) or {}
        if resume_round is not None and known.get("tracking_uri") == t.tracking_uri and known.get("run_id"):
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = t.experiment or cfg.name
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                         tags={"qgm_ray.run_dir": str(run_dir.resolve())})
            self.run_id = run.info.run_id
            self._params(cfg)
        self.uri = t.tracking_uri

    def ids(self) -> Optional[dict]:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def _params(self, cfg) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
        params = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in flat_params(cfg.to_dict()).items()]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric
        values = row_values(row, self.columns)
        step, now = int(values["round"]), int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(c, v, now, step) for c, v in values.items() if c != "round"])

    def rewind(self, round_: int) -> None:
        pass   # MLflow keeps a metric's whole history: the replayed rows are added to it

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, ENDS.get(status, ENDS["failed"])[1])

    def abandon(self) -> None:
        pass
