"""Experiment trackers (qgm_ray/tracking.py), read back with each tracker's own reader:
TensorBoard's event accumulator, MLflow's client on a local file store, the protocol buffers of
W&B's offline run file. Every value equals metrics.csv; the config is their hyper-parameters; a
missing package is one line before anything starts; a tracker that fails mid-run is dropped
with one warning and the run completes.

The readers come from requirements-test.txt (`make test` installs it); without one of them
its tests skip, except in CI (CI=true), where a skip is a failure."""
import json
import os
import signal
import struct
from pathlib import Path

import pytest

from qgm_ray import tracking
from qgm_ray.config import load_config
from qgm_ray.errors import ConfigError
from qgm_ray.runner import run as runner
from qgm_ray.runner.checkpoints import CheckpointStore
from qgm_ray.runner.metrics_file import METRIC_COLUMNS

from helpers import quiet, read_metrics, small_run

SMALL = small_run("name=tracked", "backend=local", "topology.n_clients=4", "schedule.epochs=2",
                  "eval.every_epochs=0.5")


def small(*extra):
    return load_config(None, SMALL + list(extra))


def need(module: str):
    """The module, or a skip (a failure in CI, where requirements-test.txt is installed)."""
    if os.environ.get("CI", "").lower() in ("1", "true"):
        return __import__(module)
    return pytest.importorskip(module)


def expected(rows, column):
    """(round, value) of every row that has the column, as metrics.csv holds them."""
    return [(int(r["round"]), float(r[column])) for r in rows if r[column] != ""]


# ---------------------------------------------------------------- the config

def test_no_tracker_by_default_and_each_turned_on_by_where_its_runs_go():
    from qgm_ray.config import TrackingConfig, TrackingMlflowConfig, TrackingWandbConfig
    assert tracking.enabled(small().tracking) == []
    assert tracking.enabled(TrackingConfig(wandb=TrackingWandbConfig(project="p"))) == ["wandb"]
    every = TrackingConfig(tensorboard=True, mlflow=TrackingMlflowConfig(tracking_uri="file:///x"),
                           wandb=TrackingWandbConfig(project="p"))
    assert tracking.enabled(every) == ["tensorboard", "mlflow", "wandb"]


@pytest.mark.parametrize("overrides, message", [
    (["tracking.mlflow.experiment=e"], "tracking.mlflow.experiment='e' needs tracking.mlflow.tracking_uri"),
    (["tracking.wandb.mode=offline"], "tracking.wandb.mode='offline' needs tracking.wandb.project"),
    (["tracking.wandb.project=p", "tracking.wandb.mode=shared"],
     "tracking.wandb.mode='shared' is not allowed; choose one of online, offline, disabled or null"),
    (["tracking.tensorboard=yes please"], "tracking.tensorboard: expected true or false"),
])
def test_a_bad_tracking_key_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        small(*overrides)
    assert "\n" not in str(e.value)


def test_a_tracker_whose_package_is_missing_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(tracking.PACKAGES, "wandb", ("qgm_ray_no_such_package", "pip install wandb"))
    import qgm_ray
    with pytest.raises(ConfigError) as e:   # what the Python API and main.py (exit 2) meet
        qgm_ray.run(None, SMALL + ["tracking.wandb.project=p"], output_dir=tmp_path / "r", log=quiet)
    assert str(e.value) == ("tracking.wandb is on but the qgm_ray_no_such_package package is not installed: "
                            "pip install wandb")
    assert not (tmp_path / "r").exists()


def test_the_config_as_flat_hyper_parameters():
    flat = tracking.flat_params({"seed": 0, "algorithm": {"lr": 0.1, "options": {}, "nesterov": True},
                                 "elastic": {"schedule": [[1, 4]], "max_clients": None}, "name": "x"})
    assert flat == {"seed": 0, "algorithm.lr": 0.1, "algorithm.options": "{}", "algorithm.nesterov": True,
                    "elastic.schedule": "[[1, 4]]", "elastic.max_clients": "null", "name": "x"}


# ---------------------------------------------------------------- the readers

def tensorboard_scalars(run_dir):
    """{tag: [(step, value)]} of the scalars TensorBoard serves from the run's event files,
    and the hparams plugin's content by tag."""
    need("tensorboard")
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util
    acc = EventAccumulator(str(Path(run_dir) / tracking.TENSORBOARD_DIR), size_guidance={"tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
               for tag in acc.Tags()["tensors"] if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}
    return scalars, acc.PluginTagToContent("hparams")


def wandb_records(path):
    """The records of a W&B run file (`run-<id>.wandb`): W&B's LevelDB-style log of its own
    `Record` protocol buffers, after a 7-byte header; 32 KiB blocks, a record in 1..n chunks."""
    from wandb.proto import wandb_internal_pb2
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or kind == 0:   # the rest of a block is padding
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk   # full, first | middle, last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            out.append(record)
    return out


def wandb_key(item) -> str:
    """An item's key: W&B writes it as `key` or as the one-part path `nested_key`."""
    return item.key or ".".join(item.nested_key)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One small local run with every tracker whose package is here: its directory, config and
    the MLflow store's URI."""
    import importlib.util
    d = tmp_path_factory.mktemp("tracked")
    uri = (d / "mlruns").as_uri()
    extra = ["tracking.tensorboard=true"]
    if importlib.util.find_spec("mlflow"):
        extra.append(f"tracking.mlflow.tracking_uri={uri}")
    if importlib.util.find_spec("wandb"):
        extra += ["tracking.wandb.project=qgm-tests", "tracking.wandb.mode=offline"]
    cfg = small(*extra)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # MLflow 3 refuses a file store unless asked
        logs = []
        summary = runner.run(cfg, d / "run", log=logs.append)
    assert summary["status"] == "completed"
    assert not [m for m in logs if m.startswith("warning")]
    return {"dir": d / "run", "cfg": cfg, "uri": uri}


def test_tensorboard_holds_every_metrics_column_by_round(tracked_run):
    rows = read_metrics(tracked_run["dir"])
    scalars, _ = tensorboard_scalars(tracked_run["dir"])
    columns = [c for c in METRIC_COLUMNS if c != "round"]
    assert sorted(scalars) == sorted(columns)
    for c in columns:
        assert scalars[c] == expected(rows, c), c   # float64: the very numbers of metrics.csv


def test_tensorboard_hparams_are_the_resolved_config(tracked_run):
    _, content = tensorboard_scalars(tracked_run["dir"])
    from tensorboard.plugins.hparams import plugin_data_pb2
    parsed = {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}
    start = parsed["_hparams_/session_start_info"].session_start_info.hparams
    cfg = tracked_run["cfg"]
    assert start["algorithm.name"].string_value == cfg.algorithm.name == "qg_dsgdm_n"
    assert start["algorithm.lr"].number_value == cfg.algorithm.lr == 0.05
    assert start["topology.n_clients"].number_value == 4
    assert start["tracking.tensorboard"].bool_value is True
    assert start["model.options.hidden"].string_value == "[16]"
    metrics = [m.name.tag for m in parsed["_hparams_/experiment"].experiment.metric_infos]
    assert metrics == [c for c in METRIC_COLUMNS if c != "round"]
    assert parsed["_hparams_/session_end_info"].session_end_info.status == 1   # STATUS_SUCCESS


def test_mlflow_holds_every_metrics_column_by_round_and_the_config_as_params(tracked_run):
    need("mlflow")
    from mlflow.tracking import MlflowClient
    rows = read_metrics(tracked_run["dir"])
    ids = json.loads((tracked_run["dir"] / tracking.IDS_FILE).read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=tracked_run["uri"])
        run = client.get_run(ids["mlflow"]["run_id"])
        assert client.get_experiment(run.info.experiment_id).name == "tracked"   # the run's name
        assert run.info.run_name == tracked_run["dir"].name and run.info.status == "FINISHED"
        for c in METRIC_COLUMNS[1:]:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, c))
            assert history == expected(rows, c), c
    params = run.data.params
    assert params["algorithm.name"] == "qg_dsgdm_n" and params["algorithm.lr"] == "0.05"
    assert params["tracking.mlflow.tracking_uri"] == tracked_run["uri"] and params["model.options.hidden"] == "[16]"


def test_wandb_offline_holds_every_metrics_column_by_round_and_the_config(tracked_run):
    need("wandb")
    rows = read_metrics(tracked_run["dir"])
    ids = json.loads((tracked_run["dir"] / tracking.IDS_FILE).read_text())
    files = list((tracked_run["dir"] / "wandb").glob(f"offline-run-*/run-{ids['wandb']['id']}.wandb"))
    assert len(files) == 1
    records = wandb_records(files[0])
    history = [{wandb_key(item): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    for c in METRIC_COLUMNS:
        assert [(h["round"], h[c]) for h in history if c in h] == expected(rows, c), c
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config = {wandb_key(item): json.loads(item.value_json) for item in run.config.update}
    assert config["algorithm"]["name"] == "qg_dsgdm_n" and config["algorithm"]["lr"] == 0.05
    assert run.display_name == tracked_run["dir"].name and run.run_group == "tracked"


# ---------------------------------------------------------------- failures and resumes

def test_a_tracker_that_fails_mid_run_is_dropped_with_one_warning_and_the_run_completes(tmp_path):
    """A full disk under TensorBoard's event file (/dev/full: every write there fails with
    ENOSPC) after the first row: one warning line, then every row still reaches metrics.csv."""
    logs = []
    the_run = runner.Run.open(small("tracking.tensorboard=true"), tmp_path / "r", log=logs.append)

    def fill_the_disk(row):
        for t in the_run.trackers._trackers:
            t.writer._writer = open("/dev/full", "wb")
    the_run.on_eval = fill_the_disk
    summary = the_run.execute()
    assert summary["status"] == "completed"
    warnings = [m for m in logs if m.startswith("warning")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: tracking.tensorboard failed (OSError: [Errno 28] No space left on device")
    assert warnings[0].endswith("training goes on without it")
    assert len(read_metrics(tmp_path / "r")) == 5 and the_run.trackers.names == []


def test_a_tracker_server_that_is_gone_is_one_warning_and_the_run_completes(tmp_path, monkeypatch):
    """MLflow pointed at a port nobody listens on (its retries off, so the refusal comes at once)."""
    need("mlflow")
    import socket
    with socket.socket() as s:   # a free port, closed again: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    logs = []
    summary = runner.run(small(f"tracking.mlflow.tracking_uri=http://127.0.0.1:{port}"), tmp_path / "r",
                         log=logs.append)
    assert summary["status"] == "completed" and len(read_metrics(tmp_path / "r")) == 5
    [warning] = [m for m in logs if m.startswith("warning")]
    assert warning.startswith("warning: tracking.mlflow could not start (") and "\n" not in warning
    assert not (tmp_path / "r" / tracking.IDS_FILE).exists()


def test_a_resume_goes_on_in_the_same_tracker_runs_and_tensorboard_drops_the_redone_rows(tmp_path, monkeypatch):
    """Stopped at round 24, resumed from the checkpoint of round 20 (the one of 24 lost): the
    rows after 20 are redone (their wall_seconds differ). TensorBoard's session restart purges
    the first values of round 24, so what it serves equals metrics.csv again; MLflow goes on in
    the run it started, whose last value of each round is metrics.csv's."""
    need("tensorboard")
    need("mlflow")
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    cfg = small("tracking.tensorboard=true", f"tracking.mlflow.tracking_uri={uri}",
                "fault_tolerance.checkpoint_every=20", "fault_tolerance.keep=3")
    d = tmp_path / "r"
    the_run = runner.Run.open(cfg, d, log=quiet)

    def stop_at_24(row):
        if row["round"] >= 24:
            the_run.stop.signum = signal.SIGTERM
    the_run.on_eval = stop_at_24
    assert the_run.execute()["status"] == "stopped"
    before = read_metrics(d)
    started = json.loads((d / tracking.IDS_FILE).read_text())
    CheckpointStore.of(d).list()[-1].unlink()   # the stop's checkpoint, round 24
    assert runner.run(cfg, d, resume=True, log=quiet)["status"] == "completed"
    rows = read_metrics(d)
    assert rows[1]["round"] == before[1]["round"] == "24" and rows[1]["wall_seconds"] != before[1]["wall_seconds"]
    assert len(list((d / tracking.TENSORBOARD_DIR).iterdir())) == 2   # an event file per start
    scalars, _ = tensorboard_scalars(d)
    for c in METRIC_COLUMNS[1:]:
        assert scalars[c] == expected(rows, c), c
    assert json.loads((d / tracking.IDS_FILE).read_text()) == started
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.run_id == started["mlflow"]["run_id"] and run.info.status == "FINISHED"
    for c in METRIC_COLUMNS[1:]:
        last = {m.step: m.value for m in sorted(client.get_metric_history(run.info.run_id, c),
                                                key=lambda m: m.timestamp)}
        assert sorted(last.items()) == expected(rows, c), c


def test_rewind_purges_the_rows_after_its_round_in_tensorboard(tmp_path):
    """What a replay after an engine failure does: the rows after the restored round come again."""
    need("tensorboard")
    cfg = small("tracking.tensorboard=true")
    (tmp_path / "r").mkdir()
    trackers = tracking.Trackers.open(cfg, tmp_path / "r", ["round", "test_accuracy"], log=quiet)
    for rnd, acc in ((10, 0.1), (20, 0.2), (30, 0.3)):
        trackers.log({"round": rnd, "test_accuracy": acc})
    trackers.rewind(10)
    for rnd, acc in ((20, 0.25), (30, 0.35)):
        trackers.log({"round": rnd, "test_accuracy": acc})
    trackers.close("completed")
    scalars, _ = tensorboard_scalars(tmp_path / "r")
    assert scalars == {"test_accuracy": [(10, 0.1), (20, 0.25), (30, 0.35)]}


def test_the_pinned_trackers_satisfy_the_package_extras():
    """requirements-test.txt pins what the `mlflow` and `wandb` extras of pyproject.toml admit."""
    import tomllib
    from packaging.requirements import Requirement
    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {r.name: r for r in (Requirement(line) for line in (root / "requirements-test.txt").read_text().splitlines()
                                if line.strip() and not line.startswith("#"))}
    for extra in ("mlflow", "wandb"):
        [wanted] = [Requirement(x) for x in extras[extra]]
        [pin] = pins[wanted.name].specifier
        assert pin.operator == "==" and wanted.specifier.contains(pin.version), (extra, pin)
    assert set(pins) == {"tensorboard", "mlflow-skinny", "wandb"}


@pytest.mark.parametrize("uri, absolute", [
    (None, None),
    ("mlruns", "/work/dir/mlruns"),
    ("/data/mlruns", "/data/mlruns"),
    ("file:./mlruns", "file:///work/dir/mlruns"),
    ("file:/data/mlruns", "file:///data/mlruns"),
    ("file:///data/mlruns", "file:///data/mlruns"),
    ("sqlite:///mlflow.db", "sqlite:////work/dir/mlflow.db"),
    ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
    ("http://mlflow.lab:5000", "http://mlflow.lab:5000"),
    ("databricks", "databricks"),
])
def test_a_local_mlflow_store_named_relative_to_the_working_directory_is_made_absolute(uri, absolute):
    assert tracking.absolute_uri(uri, Path("/work/dir")) == absolute


@pytest.mark.ray
@pytest.mark.slow
def test_each_trial_of_a_sweep_writes_its_own_events_equal_to_its_metrics(ray_session, tmp_path):
    need("tensorboard")
    from qgm_ray import tune as qtune
    cfg = load_config(None, SMALL + ["name=swept", "schedule.epochs=1", "tracking.tensorboard=true",
                                     "tune.grid={seed: [0, 1]}", f"data.root={tmp_path / 'data'}"])
    out = qtune.run_sweep(cfg, output_dir=tmp_path / "sweep", log=quiet)
    assert out["complete"]
    trials = sorted((tmp_path / "sweep" / qtune.TRIALS).iterdir())
    assert len(trials) == 2
    seeds = []
    for trial in trials:
        rows = read_metrics(trial)
        scalars, content = tensorboard_scalars(trial)
        for c in METRIC_COLUMNS[1:]:
            assert scalars[c] == expected(rows, c), (trial.name, c)
        from tensorboard.plugins.hparams import plugin_data_pb2
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        seeds.append(start.session_start_info.hparams["seed"].number_value)
    assert sorted(seeds) == [0, 1]
