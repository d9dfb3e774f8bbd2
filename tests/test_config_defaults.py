"""One source of defaults: the built-in defaults are the run `python main.py` makes, and
configs/default.yaml sets nothing that differs from them."""
import subprocess
import sys
from pathlib import Path

import qgm_ray
from qgm_ray.config import dump_yaml, read_yaml

ROOT = Path(__file__).resolve().parent.parent


def test_default_yaml_sets_nothing():
    assert read_yaml(ROOT / "configs" / "default.yaml") == {}
    assert qgm_ray.load_config(ROOT / "configs" / "default.yaml") == qgm_ray.load_config(None)


def test_main_py_runs_the_built_in_defaults():
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "config"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == dump_yaml(qgm_ray.load_config(None))


def test_the_default_run():
    cfg = qgm_ray.load_config(None)
    assert (cfg.name, cfg.backend, cfg.eval.every_epochs) == ("default", "ray", 2.0)
    assert (cfg.data.name, cfg.data.options, cfg.data.alpha) == ("mnist1d", {"num_samples": 20000}, 0.1)
    assert (cfg.topology.name, cfg.topology.n_clients, cfg.algorithm.name) == ("ring", 16, "qg_dsgdm_n")


def test_the_defaults_dataset_options_stay_with_their_dataset(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {name: cifar10}\n")
    assert qgm_ray.load_config(p).data.options == {}
    assert qgm_ray.load_config({"data": {"name": "synthetic"}}).data.options == {}
    assert qgm_ray.load_config(None, ["data.name=digits"]).data.options == {}
    assert qgm_ray.load_config({"data": {"name": "synthetic", "options": {"num_samples": 300}}}).data.options == \
        {"num_samples": 300}
    p.write_text("data: {alpha: 1.0}\n")   # the same dataset keeps them
    assert qgm_ray.load_config(p).data.options == {"num_samples": 20000}


def test_another_datasets_options_replace_the_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: {name: synthetic, options: {num_features: 5}}\n")
    assert qgm_ray.load_config(p).data.options == {"num_features": 5}
    p.write_text("data: {options: {template_len: 12}}\n")   # mnist1d's own: added to the default run's
    assert qgm_ray.load_config(p).data.options == {"num_samples": 20000, "template_len": 12}
