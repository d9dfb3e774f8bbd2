"""One YAML reading for the whole project: `1e-3`-style numbers are floats in files, `--set`
values and every `options` dict, and what a config may hold is bounded while reading."""
import subprocess
from pathlib import Path

import pytest

from qgm_ray import yaml_io
from qgm_ray.config import config_dict, dump_yaml, load_config, parse_override
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("1.0e9", 1e9), ("-2E+5", -2e5), ("1.e5", 1e5),
                                         (".5e3", 500.0), ("1.0e-4", 1e-4), ("3", 3), ("0.5", 0.5)])
def test_exponent_forms_read_as_numbers(text, value):
    got = yaml_io.loads(f"v: {text}", "test")["v"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["e5", "1e", "1e-", "abc", "1.2.3e4", "0x1e3"])
def test_non_numbers_stay_what_yaml_reads(text):
    assert not isinstance(yaml_io.loads(f"v: {text}", "test")["v"], float)


def test_dump_quotes_strings_that_would_read_back_as_floats():
    data = {"name": "1e5", "lr": 1e-8, "clip": 1e9, "grid": {"a": ["2E+5", 2e5]}}
    assert yaml_io.loads(yaml_io.dumps(data), "test") == data


def test_rule_knob_in_a_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: byo\n"
                 "algorithm: {name: 'examples.clip_rule:ClippedSGD', lr: 1e-3, options: {clip: 1.0e9}}\n")
    cfg = load_config(p)
    assert cfg.algorithm.options == {"clip": 1e9} and cfg.algorithm.lr == 1e-3
    # the run's config.yaml reads back to the same config
    again = tmp_path / "again.yaml"
    again.write_text(dump_yaml(cfg))
    assert load_config(again) == cfg


def test_set_values_and_options_dicts():
    assert parse_override("algorithm.lr=1e-3") == ("algorithm.lr", 1e-3)
    assert parse_override("algorithm.options={clip: 1.0e9}") == ("algorithm.options", {"clip": 1e9})
    cfg = load_config(None, ["algorithm.name=examples.clip_rule:ClippedSGD", "algorithm.options.clip=2E+1",
                             "data.alpha=1e1", "tune.grid={algorithm.lr: [1e-3, 1.0e-2]}"])
    assert cfg.algorithm.options["clip"] == 20.0 and cfg.data.alpha == 10.0
    assert cfg.tune.grid == {"algorithm.lr": [1e-3, 1e-2]}


def test_model_and_data_options(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {name: 'examples.blobs:blobs', options: {spread: 1.5e0}}\n")
    assert config_dict(p)["data"]["options"] == {"spread": 1.5}


def test_no_yaml_read_outside_yaml_io():
    # Every reading goes through qgm_ray.yaml_io, so no module sees YAML 1.1's strings.
    out = subprocess.run(["grep", "-rnE", r"yaml\.(safe_)?(load|dump)|yaml\.(full_|unsafe_)load",
                          "--include=*.py", "qgm_ray"], cwd=ROOT, capture_output=True, text=True)
    offenders = [line for line in out.stdout.splitlines() if not line.startswith("qgm_ray/yaml_io.py")]
    assert offenders == []


# ---------------------------------------------------------------- bounds while reading

def _laughs(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(lines)


@pytest.mark.parametrize("key", ["data.alpha", "name", "algorithm.options.clip", "tune.grid.data.alpha"])
def test_billion_laughs_refused_in_one_line(tmp_path, key):
    body = _laughs(9).replace("\n", "\n  ")
    section, _, rest = key.partition(".")
    p = tmp_path / "bomb.yaml"
    value = "*a8"
    if key == "tune.grid.data.alpha":
        p.write_text(f"defs:\n  {body}\ntune:\n  grid:\n    data.alpha: {value}\n")
    elif rest:
        inner = rest.split(".")
        nested = value
        for part in reversed(inner):
            nested = f"{{{part}: {nested}}}"
        p.write_text(f"defs:\n  {body}\n{section}: {nested}\n")
    else:
        p.write_text(f"defs:\n  {body}\n{section}: {value}\n")
    with pytest.raises(ConfigError) as e:
        config_dict(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "100,000 values" in msg


def test_bounds_in_set_values():
    with pytest.raises(ConfigError, match=r"^--set data.alpha: expands to more than"):
        parse_override("data.alpha={" + _laughs(7).replace("\n", ", ") + "}")
    with pytest.raises(ConfigError, match="recursive alias"):
        parse_override("data.alpha=&a [*a]")
    with pytest.raises(ConfigError, match="too deep"):
        parse_override("data.alpha=" + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match="characters; a config holds at most"):
        parse_override("name=" + "x" * (yaml_io.MAX_BYTES + 1))


def test_a_few_aliases_are_fine(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("schedule: {milestones: &m [0.5, 0.75]}\ntune: {grid: {schedule.milestones: [*m, [0.3]]}}\n")
    assert load_config(p).tune.grid == {"schedule.milestones": [[0.5, 0.75], [0.3]]}
