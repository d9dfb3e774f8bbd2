"""Bad input to the Python API and configs past their bounds: each is one ConfigError line,
raised before anything starts or is written, quickly."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qgm_ray
from qgm_ray.config import MAX_MILESTONES, MAX_NAME_LENGTH, MAX_TRIALS
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.mark.parametrize("overrides, words", [
    (5, "overrides must be a list"),
    (b"data.alpha=1", "overrides must be a list"),
    ([1, 2], "each item must be a 'key=value' string"),
    ([None], "each item must be a 'key=value' string"),
    ([b"data.alpha=1"], "each item must be a 'key=value' string"),
    ({1: 2}, "keys must be dotted config keys"),
    ({"": 2}, "keys must be dotted config keys"),
    ({"data.alhpa": 2}, "unknown key 'data.alhpa'"),
])
def test_bad_overrides(overrides, words):
    with pytest.raises(ConfigError) as e:
        qgm_ray.load_config(None, overrides)
    assert words in one_line(e)


def test_good_overrides_still_work():
    assert qgm_ray.load_config(None, None).data.alpha == 0.1
    assert qgm_ray.load_config(None, "data.alpha=2").data.alpha == 2.0
    assert qgm_ray.load_config(None, ("data.alpha=2",)).data.alpha == 2.0
    assert qgm_ray.load_config(None, {"data.alpha": 3}).data.alpha == 3.0
    # a social graph takes its own size, from the API as from --set
    assert qgm_ray.load_config(None, ["topology.name=social"]).topology.n_clients == 32
    assert qgm_ray.load_config({"topology": {"name": "social"}}).topology.n_clients == 32


@pytest.mark.parametrize("config", [5, b"configs/default.yaml", ["data.alpha=1"]])
def test_bad_config_argument(config):
    with pytest.raises(ConfigError) as e:
        qgm_ray.load_config(config)
    assert "config must be a YAML path, a dict or a qgm_ray.Config" in one_line(e)


@pytest.mark.parametrize("output_dir", [123, "", "  ", ["runs/x"], b"runs/x"])
def test_run_refuses_a_bad_output_dir_before_anything(tmp_path, monkeypatch, output_dir):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        qgm_ray.run(None, ["progress=false"], output_dir=output_dir, log=None)
    assert "run(output_dir=...) must be a directory path" in one_line(e)
    assert list(tmp_path.iterdir()) == []   # nothing written


def test_sweep_refuses_a_bad_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        qgm_ray.sweep(None, output_dir=7, log=None)
    assert "sweep(output_dir=...) must be a directory path" in one_line(e)
    with pytest.raises(ConfigError) as e:
        qgm_ray.sweep(None, resume_dir=7.5, log=None)
    assert "sweep(resume_dir=...) must be a directory path" in one_line(e)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_dir", [123, None, "", 1.5])
def test_load_run_refuses_what_is_not_a_path(run_dir):
    with pytest.raises(ConfigError) as e:
        qgm_ray.load_run(run_dir)
    assert "load_run(run_dir) must be a directory path" in one_line(e)


@pytest.mark.parametrize("content, words", [
    (b'{"status": "completed", "rou', "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[1, 2, 3]", "a JSON list, not an object"),
    (b"", "not JSON"),
])
def test_load_run_of_a_garbled_summary(tmp_path, content, words):
    (tmp_path / "summary.json").write_bytes(content)
    with pytest.raises(ConfigError) as e:
        qgm_ray.load_run(tmp_path)
    msg = one_line(e)
    assert words in msg and "summary.json" in msg


def test_load_run_of_a_summary_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        qgm_ray.load_run(tmp_path)
    assert "not a run directory (no summary.json)" in one_line(e)


def test_load_run_reads_a_good_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", "final_test_accuracy": 0.5}))
    result = qgm_ray.load_run(str(tmp_path))
    assert result.status == "completed" and result.final_test_accuracy == 0.5 and result.config is None


# ---------------------------------------------------------------- bounds

@pytest.mark.parametrize("overrides, words", [
    ([f"name={'n' * 300}"], f"name is 300 characters long; at most {MAX_NAME_LENGTH}"),
    (["seed=99999999999999999999"], "seed must be an integer in [0, 2^32)"),
    (["seed=-1"], "seed must be an integer in [0, 2^32)"),
    (["data.seed=4294967296"], "data.seed must be an integer in [0, 2^32)"),
    (["tune.num_samples=100000000"], f"tune.num_samples must be in [1, {MAX_TRIALS:,}]"),
    (["tune.num_samples=0"], f"tune.num_samples must be in [1, {MAX_TRIALS:,}]"),
])
def test_values_past_their_bounds(overrides, words):
    with pytest.raises(ConfigError) as e:
        qgm_ray.load_config(None, overrides)
    assert words in one_line(e)


def test_bounds_hold_at_their_limits():
    cfg = qgm_ray.load_config(None, [f"name={'n' * MAX_NAME_LENGTH}", "seed=4294967295",
                                     f"tune.num_samples={MAX_TRIALS}"])
    assert len(cfg.name) == MAX_NAME_LENGTH and cfg.seed == 2**32 - 1


def _quick(overrides_or_dict, words):
    start = time.process_time()
    with pytest.raises(ConfigError) as e:
        if isinstance(overrides_or_dict, dict):
            qgm_ray.load_config(overrides_or_dict)
        else:
            qgm_ray.load_config(None, overrides_or_dict)
    assert words in one_line(e)
    assert time.process_time() - start < 10


def test_a_million_milestones_refused_quickly():
    _quick({"schedule": {"milestones": [0.5] * 1_000_000}},
           f"schedule.milestones holds 1,000,000 entries; at most {MAX_MILESTONES}")


def test_a_sweep_of_a_million_trials_refused_quickly():
    grid = {"data.alpha": [0.1 * (i + 1) for i in range(1000)], "algorithm.lr": [0.01 * (i + 1) for i in range(1000)]}
    _quick({"tune": {"grid": grid}}, f"makes more than {MAX_TRIALS:,} trials")
    _quick({"tune": {"grid": {"data.alpha": [1.0] * 100, "seed": list(range(100))}, "num_samples": 2}},
           f"makes more than {MAX_TRIALS:,} trials")


def test_a_long_elastic_schedule_refused():
    _quick({"elastic": {"schedule": [[1, 8]] * 5000}}, "elastic.schedule holds 5,000 steps; at most 1,000")


def test_a_huge_value_of_the_wrong_type_is_named_not_printed():
    _quick({"data": {"alpha": list(range(1_000_000))}}, "data.alpha: expected a number, got a list of 1,000,000 entries")


def test_cli_says_it_in_one_line_with_exit_2():
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "config", "--set", "seed=99999999999999999999"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == ["config error: seed must be an integer in [0, 2^32) "
                                               "(0 .. 4294967295), got 99999999999999999999"]
