"""metrics.csv (qgm_ray/runner/metrics_file.py): the one module that writes it and reads it back."""
import pandas as pd
import pytest

from qgm_ray.errors import ConfigError
from qgm_ray.outputs import WriteError
from qgm_ray.runner.metrics_file import METRIC_COLUMNS, MetricsFile, read_history


def row(t, acc):
    return {"round": t, "epoch": t / 8, "lr": 0.1, "train_loss": 1.0 / t, "test_accuracy": acc,
            "local_test_accuracy": acc / 2, "consensus_distance": 0.01, "bytes_sent": 1000 * t,
            "wall_seconds": 0.5 * t, "n_clients": 4, "test_loss": 2 - acc, "bytes_cross_node": 0}


def written(tmp_path, rows=((8, 0.5), (16, 0.75), (24, 0.625))):
    m = MetricsFile.of(tmp_path)
    for t, acc in rows:
        m.append(row(t, acc))
    return m


def test_rows_written_are_read_back_in_the_file_format(tmp_path):
    m = written(tmp_path)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == ",".join(METRIC_COLUMNS) and len(lines) == 4
    rows = m.read()
    assert [int(r["round"]) for r in rows] == [8, 16, 24]
    assert m.accuracies() == [0.5, 0.75, 0.625]
    df = m.frame()
    assert df.equals(pd.read_csv(tmp_path / "metrics.csv"))   # what a pandas reader of the file sees
    assert read_history(tmp_path).equals(df)


def test_truncating_keeps_the_rows_up_to_a_round_and_leaves_no_temporary_file(tmp_path):
    m = written(tmp_path)
    m.truncate_after(16)
    assert m.accuracies() == [0.5, 0.75]
    m.truncate_after(0)
    assert m.read() == [] and (tmp_path / "metrics.csv").read_text() == ",".join(METRIC_COLUMNS) + "\n"
    m.append(row(8, 0.25))   # appending after a header-only file adds no second header
    assert m.accuracies() == [0.25]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_a_row_torn_by_a_crash_is_dropped_with_a_line(tmp_path):
    m = written(tmp_path)
    with open(m.path, "a") as f:
        f.write("32,4.0,0.1")
    logs = []
    assert [int(r["round"]) for r in m.read(log=logs.append)] == [8, 16, 24]
    assert logs == [f"{m.path}: dropped its last line, cut short by a crash"]


PLOTTED = ("epoch", "lr", "train_loss", "test_accuracy", "consensus_distance")


@pytest.mark.parametrize("content,required,expect", [
    ("round,epoch\n8,1.0\n", PLOTTED, "has no lr, train_loss, test_accuracy, consensus_distance column"),
    ("round,epoch\n8,1.0\n", (), "has no test_accuracy column"),
    ("\x00\x01binary", (), "a binary file, not a CSV table written by qgm-ray"),
    ("round,test_accuracy\n8,0.5\nnot a row at all\n", (), "line 3: not a metrics row"),
    ("round,test_accuracy\n16,0.5\n8,0.6\n", (), "line 3: round 8 after round 16"),
])
def test_a_file_this_program_did_not_write_is_refused_in_one_line(tmp_path, content, required, expect):
    (tmp_path / "metrics.csv").write_text(content)
    m = MetricsFile.of(tmp_path)
    with pytest.raises(ConfigError) as e:
        m.read(required=required)
    assert expect in str(e.value) and "\n" not in str(e.value)
    assert read_history(tmp_path) is None   # a sweep's reader skips it


def test_a_cell_that_is_not_a_number_is_one_line_and_an_empty_cell_is_nan(tmp_path):
    (tmp_path / "metrics.csv").write_text("round,test_accuracy,train_loss,bytes_cross_node\n8,0.5,nan,\n16,0.6,1.0,3\n")
    df = MetricsFile.of(tmp_path).frame()
    assert df["bytes_cross_node"].isna().tolist() == [True, False] and df["train_loss"].isna().tolist() == [True, False]
    (tmp_path / "metrics.csv").write_text("round,test_accuracy,lr\n8,0.5,fast\n")
    with pytest.raises(ConfigError, match="column lr holds 'fast', not a number"):
        MetricsFile.of(tmp_path).frame()


def test_no_file_is_no_rows_and_a_row_that_cannot_be_written_is_one_line(tmp_path):
    assert MetricsFile.of(tmp_path).read() == [] and MetricsFile.of(tmp_path).frame().empty
    (tmp_path / "metrics.csv").mkdir()
    with pytest.raises(WriteError) as e:
        MetricsFile.of(tmp_path).append(row(8, 0.5))
    assert str(e.value).startswith(f"cannot write {tmp_path / 'metrics.csv'}") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="is not a file"):
        MetricsFile.of(tmp_path).read()


def test_metrics_csv_replaced_by_a_directory_mid_run_fails_in_words(tmp_path):
    """The run ends `failed` with a summary that names metrics.csv and keeps the accuracies it
    had; the checkpoint before the failure stays resumable."""
    import json
    import os

    from helpers import small_run
    from qgm_ray.config import load_config
    from qgm_ray.runner import run as runner

    d = tmp_path / "run"
    cfg = load_config(None, small_run("backend=local", "topology.n_clients=4", "schedule.epochs=3",
                                      "eval.every_epochs=1"))

    def swap_for_a_directory(row):
        if (d / "metrics.csv").is_file():
            os.unlink(d / "metrics.csv")
            os.mkdir(d / "metrics.csv")

    summary = runner.run(cfg, d, on_eval=swap_for_a_directory, log=lambda m: None)
    assert summary["status"] == "failed"
    assert "metrics.csv" in summary["message"] and "Is a directory" in summary["message"]
    assert "\n" not in summary["message"] and "--resume" in summary["message"]
    assert summary["final_test_accuracy"] is not None   # the evaluation before the swap
    assert json.loads((d / "summary.json").read_text())["status"] == "failed"
