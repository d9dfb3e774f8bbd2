"""Experiment trackers: a run's metrics rows and its resolved config, as the run goes, to
TensorBoard event files, MLflow and Weights & Biases (the config's `tracking:` section).

The runner hands each metrics.csv row to `Trackers.log` right after the file took it (the one
place rows are written), so every tracker holds what metrics.csv holds: a scalar per column, by
round. A tracker is on when its section says where its runs go; its package is checked with the
config (`check_installed`), before anything starts. A tracker that fails (a full disk, a server
gone) is dropped with one warning line: training never stops or waits for a tracker.

What is written: TensorBoard's event files in <run dir>/tensorboard/, W&B's files in
<run dir>/wandb/ (and whatever W&B online sends to its server), MLflow's runs where its
tracking_uri points; tracking.json in the run directory keeps the MLflow and W&B run ids, so a
--resume goes on in the same tracker runs. A replay after a failure (or a resume) redoes the
rows after its round: TensorBoard drops the old ones (a session restart purges them); MLflow and
W&B keep every value they were sent, so such rows appear twice there (the same numbers again).
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from qgm_ray.errors import ConfigError
from qgm_ray.outputs import WriteError, atomic_write_text

# tracker -> (the module it imports, what to install when it is missing)
PACKAGES = {"tensorboard": ("tensorboardX", "pip install tensorboardX"),
            "mlflow": ("mlflow", "pip install mlflow-skinny  (or the qgm-ray[mlflow] extra)"),
            "wandb": ("wandb", "pip install wandb  (or the qgm-ray[wandb] extra)")}
WANDB_MODES = ("online", "offline", "disabled")
IDS_FILE = "tracking.json"          # the MLflow and W&B run ids of the run directory
TENSORBOARD_DIR = "tensorboard"     # under the run directory
WARNING_CHARS = 400                 # of a tracker's error, in its one warning line
# A run's end (summary.json's status) in each tracker's terms: TensorBoard's hparams session
# status, MLflow's run status, W&B's exit code. A diverged run is a result, not a failure.
ENDS = {"completed": ("STATUS_SUCCESS", "FINISHED", 0), "diverged": ("STATUS_SUCCESS", "FINISHED", 0),
        "stopped": ("STATUS_ABORTED", "KILLED", 1), "failed": ("STATUS_FAILURE", "FAILED", 1)}


def enabled(tc) -> list[str]:
    """The trackers a `tracking:` section turns on, in the order they are fed."""
    return [name for name, on in (("tensorboard", tc.tensorboard), ("mlflow", tc.mlflow.tracking_uri is not None),
                                  ("wandb", tc.wandb.project is not None)) if on]


def check_installed(tc) -> None:
    """ConfigError, one line naming the key and the install, for an enabled tracker whose
    package is missing (found without importing it: mlflow's import alone takes seconds)."""
    for name in enabled(tc):
        module, install = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"tracking.{name} is on but the {module} package is not installed: {install}")


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


def flat_params(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {dotted.key: bool | int | float | str}: what hyper-parameter views
    take. A list, an empty mapping or null is its JSON text, so every key keeps a value."""
    out: dict = {}
    for key, value in d.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, full + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[full] = value
        else:
            out[full] = json.dumps(value, default=str)
    return out


def row_values(row: dict, columns) -> dict:
    """{column: float} of a metrics row, `round` (the step) included; a column the row leaves
    empty (None or '') is not sent."""
    out = {}
    for c in columns:
        v = row.get(c)
        if v is None or v == "":
            continue
        out[c] = float(v)
    return out


class Trackers:
    """The trackers a run's config turns on. `log(row)` after each metrics row, `rewind(round)`
    when the rows after `round` are redone, `close(status)` at the end. Each call goes to every
    live tracker; one that raises is dropped after one warning line."""

    def __init__(self, trackers: list, log: Callable[[str], None]):
        self._trackers, self._log = trackers, log

    @classmethod
    def open(cls, cfg, run_dir: Path, columns, *, resume_round: Optional[int] = None,
             log: Callable[[str], None] = print) -> "Trackers":
        """Start the enabled trackers of `cfg` for the run in `run_dir`; `resume_round`: the
        round a --resume goes on from (None: a new run)."""
        run_dir = Path(run_dir)
        names = enabled(cfg.tracking)
        if not names:
            return cls([], log)
        ids = _read_ids(run_dir)
        made = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}
        trackers = cls([], log)
        for name in names:
            try:
                trackers._trackers.append(made[name](cfg, run_dir, list(columns), resume_round, ids))
            except Exception as e:  # noqa: BLE001 - a tracker that cannot start is not the run's failure
                trackers._warn(name, e, "could not start")
        try:
            if any(t.ids() for t in trackers._trackers):
                _write_ids(run_dir, {**ids, **{t.name: t.ids() for t in trackers._trackers if t.ids()}})
        except WriteError as e:
            log(f"warning: {e}; a --resume starts new tracker runs")
        return trackers

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._trackers]

    def log(self, row: dict) -> None:
        self._each("log", row)

    def rewind(self, round_: int) -> None:
        self._each("rewind", round_)

    def close(self, status: str) -> None:
        self._each("close", status)
        self._trackers = []

    def _each(self, method: str, *args) -> None:
        for t in list(self._trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:  # noqa: BLE001 - training goes on without a failed tracker
                self._trackers.remove(t)
                self._warn(t.name, e, "failed")
                try:
                    t.abandon()
                except Exception:  # noqa: BLE001 - it has failed already; its end is best effort
                    pass

    def _warn(self, name: str, e: BaseException, what: str) -> None:
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        if len(reason) > WARNING_CHARS:   # one line; what to do about it often closes the message
            reason = f"{reason[:WARNING_CHARS // 2]} ... {reason[-WARNING_CHARS // 2:]}"
        self._log(f"warning: tracking.{name} {what} ({reason}); training goes on without it")


def _read_ids(run_dir: Path) -> dict:
    try:
        ids = json.loads((run_dir / IDS_FILE).read_text())
        return ids if isinstance(ids, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_ids(run_dir: Path, ids: dict) -> None:
    atomic_write_text(run_dir / IDS_FILE, json.dumps(ids, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------- TensorBoard

class _TensorBoard:
    """Event files written with tensorboardX's protocol buffers and record writer, in the
    caller's thread: it ships with Ray Tune (a dependency already), where torch.utils.tensorboard
    needs the whole tensorboard package just to write. Not its SummaryWriter: that one writes
    from a background thread, where a full disk would go unseen (and its flush would wait on a
    dead thread), and its hparams go to a directory of their own. Each value is a float64 tensor
    of the scalars plugin, so TensorBoard holds exactly the number metrics.csv holds (a classic
    scalar summary is float32)."""

    name = "tensorboard"

    def __init__(self, cfg, run_dir: Path, columns: list, resume_round: Optional[int], ids: dict):
        from tensorboardX.record_writer import RecordWriter
        self.columns = columns
        self.dir = run_dir / TENSORBOARD_DIR
        self.dir.mkdir(exist_ok=True)
        # A name per start, ordered by time (TensorBoard reads a directory's files in name order).
        self.path = self.dir / f"events.out.tfevents.{time.time_ns()}.{socket.gethostname()}.{os.getpid()}"
        self.writer = RecordWriter(str(self.path))
        self._event(file_version="brain.Event:2")
        if resume_round is None:
            self._session_start(0)   # the first start: later ones are restarts, which purge
            self._hparams(cfg)
        else:
            self._session_start(resume_round + 1)
        self.writer.flush()

    def ids(self) -> Optional[dict]:
        return None

    def log(self, row: dict) -> None:
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.proto.tensor_pb2 import TensorProto
        from tensorboardX.proto.types_pb2 import DT_DOUBLE
        values = row_values(row, self.columns)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
        summary = Summary(value=[Summary.Value(tag=c, metadata=meta, tensor=TensorProto(dtype=DT_DOUBLE, double_val=[v]))
                                 for c, v in values.items() if c != "round"])
        self._event(step=int(values["round"]), summary=summary)
        self.writer.flush()

    def rewind(self, round_: int) -> None:
        self._session_start(round_ + 1)
        self.writer.flush()

    def close(self, status: str) -> None:
        self._hparams_end(status)
        self.writer.flush()
        self.writer.close()

    def abandon(self) -> None:
        self.writer.close()

    def _event(self, step: int = 0, **fields) -> None:
        from tensorboardX.proto.event_pb2 import Event
        self.writer.write(Event(wall_time=time.time(), step=step, **fields).SerializeToString())

    def _session_start(self, step: int) -> None:
        """TensorBoard's session restart: at `step` > 0 it drops the values of steps >= `step`."""
        from tensorboardX.proto.event_pb2 import SessionLog
        self._event(step=step, session_log=SessionLog(status=SessionLog.START))

    def _hparams(self, cfg) -> None:
        """The resolved config as the hparams plugin's session, the columns as its metrics."""
        from tensorboardX.summary import hparams
        experiment, session_start, _ = hparams(flat_params(cfg.to_dict()), {c: 0.0 for c in self.columns
                                                                            if c != "round"})
        self._event(summary=experiment)
        self._event(summary=session_start)

    def _hparams_end(self, status: str) -> None:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        code = ENDS.get(status, ENDS["failed"])[0]
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(code), end_time_secs=time.time()),
                                    version=0)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                      content=content.SerializeToString()))
        self._event(summary=Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=meta)]))


# ---------------------------------------------------------------- MLflow

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


# ---------------------------------------------------------------- Weights & Biases

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
