"""The keys both engines read live in `compute.*`; their old names under `ray.*` are still
read everywhere a key can be written, each with one line naming the new name."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import qgm_ray
from qgm_ray import config
from qgm_ray.config import moved
from qgm_ray.config import MOVED_KEYS, ConfigError, describe_keys, dump_yaml, load_config, trial_dict
from tests.helpers import main_py

GOLDEN_OLD_RUN = Path(__file__).parent / "golden" / "old_run_round30"
LOCAL = ["backend=local"]


@pytest.fixture
def told(monkeypatch, capsys):
    """A process that has not yet said any key moved; returns a reader of what it said since."""
    monkeypatch.setattr(moved, "_told_moved", set())
    capsys.readouterr()
    return lambda: capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("name, text, value", [
    ("torch_threads", "2", 2),
    ("pack_clients", "true", True),
    ("vmap_chunk", "3", 3),
])
def test_each_old_key_is_read_as_its_new_one_with_one_line(told, name, text, value):
    cfg = load_config(None, LOCAL + [f"ray.{name}={text}"])
    assert getattr(cfg.compute, name) == value
    assert not hasattr(cfg.ray, name)
    assert told() == [f"ray.{name} is now compute.{name}; read as such"]
    # once per key per process
    assert getattr(load_config(None, LOCAL + [f"ray.{name}={text}"]).compute, name) == value
    assert told() == []


def test_the_new_keys_say_nothing(told):
    cfg = load_config(None, LOCAL + ["compute.torch_threads=2", "compute.pack_clients=false",
                                     "compute.vmap_chunk=4"])
    assert (cfg.compute.torch_threads, cfg.compute.pack_clients, cfg.compute.vmap_chunk) == (2, False, 4)
    assert told() == []


def test_old_keys_in_a_file_a_dict_and_a_ray_mapping(told, tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("backend: local\nray:\n  clients_per_actor: 2\n  torch_threads: 2\n  pack_clients: false\n")
    cfg = load_config(path)
    assert (cfg.compute.torch_threads, cfg.compute.pack_clients, cfg.ray.clients_per_actor) == (2, False, 2)
    assert qgm_ray.load_config({"backend": "local", "ray": {"vmap_chunk": 5}}).compute.vmap_chunk == 5
    assert qgm_ray.load_config(None, {"backend": "local", "ray.vmap_chunk": 6}).compute.vmap_chunk == 6
    assert load_config(None, LOCAL + ["ray={torch_threads: 3, clients_per_actor: 4}"]).compute.torch_threads == 3
    assert sorted(told()) == [f"{old} is now {new}; read as such" for old, new in sorted(MOVED_KEYS.items())]


def test_a_later_layer_sets_the_new_key_over_an_old_one_in_the_file(told, tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("backend: local\nray:\n  torch_threads: 2\n")
    assert load_config(path, ["compute.torch_threads=3"]).compute.torch_threads == 3
    assert load_config(path, ["ray.torch_threads=4"]).compute.torch_threads == 4


@pytest.mark.parametrize("how", ["overrides", "file", "dict"])
def test_one_key_under_both_names_with_different_values_is_one_line(told, tmp_path, how):
    with pytest.raises(ConfigError) as e:
        if how == "overrides":
            load_config(None, LOCAL + ["ray.torch_threads=2", "compute.torch_threads=3"])
        elif how == "file":
            path = tmp_path / "both.yaml"
            path.write_text("ray:\n  torch_threads: 2\ncompute:\n  torch_threads: 3\n")
            load_config(path)
        else:
            qgm_ray.load_config({"ray": {"torch_threads": 2}, "compute": {"torch_threads": 3}})
    message = str(e.value)
    assert "\n" not in message
    assert "ray.torch_threads=2" in message and "compute.torch_threads=3" in message
    assert "keep only compute.torch_threads" in message


def test_the_same_value_under_both_names_is_accepted(told):
    assert load_config(None, LOCAL + ["ray.pack_clients=true", "compute.pack_clients=true"]).compute.pack_clients


def test_an_old_key_keeps_its_range_check_under_the_new_name(told):
    with pytest.raises(ConfigError, match=r"^compute.torch_threads must be >= 1, got 0$"):
        load_config(None, LOCAL + ["ray.torch_threads=0"])


def test_tune_grid_and_search_read_old_keys(told):
    cfg = load_config(None, LOCAL + ["tune.grid={ray.pack_clients: [true, false], seed: [0, 1]}",
                                     "tune.search={ray.torch_threads: {choice: [1, 2]}}"])
    assert cfg.tune.grid == {"compute.pack_clients": [True, False], "seed": [0, 1]}
    assert cfg.tune.search == {"compute.torch_threads": {"choice": [1, 2]}}
    # a trial of a sweep written with the old name (its results.csv's parameter columns)
    trial = config.from_dict(trial_dict(cfg.to_dict(), {"ray.torch_threads": 2}))
    assert trial.compute.torch_threads == 2


def test_an_old_run_directory_loads_and_its_checkpoint_stays_valid(told):
    """The golden run's config.yaml has ray.torch_threads etc.; the keys are not in REPLAY_KEYS,
    so the checkpoint's fingerprint matches the config as read now."""
    import torch
    from qgm_ray.runner.checkpoints import REPLAY_KEYS, replay_fingerprint

    written = yaml.safe_load((GOLDEN_OLD_RUN / "config.yaml").read_text())
    assert {"torch_threads", "pack_clients", "vmap_chunk"} <= set(written["ray"])
    cfg = load_config(GOLDEN_OLD_RUN / "config.yaml")
    assert (cfg.compute.torch_threads, cfg.compute.pack_clients, cfg.compute.vmap_chunk) == (1, "auto", "auto")
    assert "compute" not in REPLAY_KEYS and "ray" not in REPLAY_KEYS
    ckpt = torch.load(GOLDEN_OLD_RUN / "checkpoints" / "round_00000030.pt", weights_only=True)
    assert ckpt["fingerprint"] == replay_fingerprint(cfg)
    assert len(told()) == 3


def test_the_dump_and_the_key_listing_name_only_the_new_keys(told):
    dumped = yaml.safe_load(dump_yaml(load_config(None, LOCAL + ["ray.torch_threads=2"])))
    assert dumped["compute"] == {"torch_threads": 2, "pack_clients": "auto", "vmap_chunk": "auto", "kernels": "auto"}
    assert not set(dumped["ray"]) & {"torch_threads", "pack_clients", "vmap_chunk"}
    keys = [line.split()[0] for line in describe_keys().splitlines()[1:]]
    assert {"compute.torch_threads", "compute.pack_clients", "compute.vmap_chunk"} <= set(keys)
    assert not {"ray.torch_threads", "ray.pack_clients", "ray.vmap_chunk"} & set(keys)
    assert "one of auto, true, false" in next(line for line in describe_keys().splitlines()
                                              if line.startswith("compute.pack_clients"))


def test_the_cli_reads_an_old_key_with_one_line():
    r = main_py("config", "--set", "backend=local", "--set", "ray.vmap_chunk=2", timeout=120)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["compute"]["vmap_chunk"] == 2
    assert r.stderr.splitlines() == ["ray.vmap_chunk is now compute.vmap_chunk; read as such"]
