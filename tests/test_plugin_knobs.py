"""A plug-in rule's knobs: its own default of a shared knob wins where the user sets none, the
range checks keep a knob's type, and `config --keys` lists a named plug-in's knobs."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import qgm_ray
from qgm_ray.algorithms.registry import make_algorithm, make_algorithm_from_config
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

RULE = textwrap.dedent('''
    import qgm_ray

    class Rule(qgm_ray.Algorithm):
        defaults = {"momentum": 0.0, "weight_decay": 0.0, "steps": 0, "scale": 2.0}
        checks = {"steps": qgm_ray.non_negative, "scale": qgm_ray.positive}

        def pre_mix(self, state, params, grad, lr):
            return params - lr * grad

        def post_mix(self, state, params, mixed, lr):
            qgm_ray.finish_round(state)
            return mixed
''')


@pytest.fixture
def rule_ref(tmp_path, monkeypatch):
    module = f"knob_rule_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(RULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return f"{module}:Rule"


def test_unset_shared_knob_takes_the_rules_default(rule_ref):
    cfg = qgm_ray.load_config(None, [f"algorithm.name={rule_ref}"])
    assert cfg.algorithm.momentum is None   # unset: the rule decides
    rule = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
    assert rule.hparams["momentum"] == 0.0 and rule.hparams["weight_decay"] == 0.0


def test_set_shared_knob_wins(rule_ref):
    cfg = qgm_ray.load_config(None, [f"algorithm.name={rule_ref}", "algorithm.momentum=0.5"])
    rule = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
    assert rule.hparams["momentum"] == 0.5


def test_builtin_defaults_unchanged():
    cfg = qgm_ray.load_config(None)
    rule = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
    assert rule.hparams == {"weight_decay": 1e-4, "momentum": 0.9, "qgm_beta": 0.9}
    adam = make_algorithm_from_config("dadam", qgm_ray.load_config(None, ["algorithm.name=dadam"]).algorithm.hparams())
    assert adam.hparams == {"weight_decay": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8}


def test_checks_keep_a_knobs_type(rule_ref):
    rule = make_algorithm(rule_ref)
    assert rule.hparams["steps"] == 0 and type(rule.hparams["steps"]) is int
    assert type(rule.hparams["scale"]) is float
    again = make_algorithm(rule_ref, **rule.hparams)   # the resolved values rebuild an equal rule
    assert again.hparams == rule.hparams
    cfg = qgm_ray.load_config(None, [f"algorithm.name={rule_ref}", "algorithm.options.steps=3"])
    assert make_algorithm_from_config(cfg.algorithm.name, {}, cfg.algorithm.options).hparams["steps"] == 3
    for check, value in ((qgm_ray.non_negative, 3), (qgm_ray.positive, 2), (qgm_ray.unit_interval, 0)):
        assert type(check("k", value)) is int


@pytest.mark.parametrize("override, message", [
    ("algorithm.options.steps=-1", r"^algorithm.options.steps must be >= 0, got -1$"),
    ("algorithm.options.steps=1.5", r"^algorithm.options.steps must be an integer"),
    ("algorithm.options.scale=0", r"^algorithm.options.scale must be > 0, got 0.0$"),
    ("algorithm.momentum=1.5", r"^algorithm.momentum must be in \[0, 1\), got 1.5$"),
])
def test_knob_errors_are_one_line(rule_ref, override, message):
    with pytest.raises(ConfigError, match=message):
        qgm_ray.load_config(None, [f"algorithm.name={rule_ref}", override])


@pytest.mark.parametrize("override, message", [
    ("algorithm.momentum=1.0", r"^algorithm.momentum must be in \[0, 1\), got 1.0$"),
    ("algorithm.betas=[0.9]", r"^algorithm.betas must be two numbers in \[0, 1\)"),
    ("algorithm.eps=0", r"^algorithm.eps must be > 0"),
    ("algorithm.qgm_local_step=0", r"^algorithm.qgm_local_step must be an integer >= 1"),
])
def test_shared_knob_checked_even_where_the_rule_ignores_it(override, message):
    # dsgd reads none of these; a value out of range is still a mistake in the config
    with pytest.raises(ConfigError, match=message):
        qgm_ray.load_config(None, ["algorithm.name=dsgd", override])


def test_one_range_check_per_shared_knob():
    from qgm_ray.algorithms.hparams import SHARED, SHARED_CHECKS, _merged
    from qgm_ray.algorithms.registry import ALGORITHMS, algorithm_class
    assert set(SHARED_CHECKS) <= set(SHARED)
    for name in ALGORITHMS:   # the built-ins leave the shared knobs' ranges to SHARED_CHECKS
        assert not set(_merged(algorithm_class(name), "checks")) & set(SHARED_CHECKS), name


def test_config_keys_lists_a_plugins_knobs(rule_ref, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "config", "--keys", "--set",
                          f"algorithm.name={rule_ref}"], capture_output=True, text=True, cwd=tmp_path,
                         env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert rows["algorithm.options.steps"].split()[1:3] == ["int", "0"]
    assert rows["algorithm.options.scale"].split()[1:3] == ["float", "2.0"]
    assert rows["algorithm.momentum"].split()[4] == "0.0"   # the rule's default, not 0.9
    assert "not read by" in rows["algorithm.qgm_beta"]
    bad = subprocess.run([sys.executable, str(ROOT / "main.py"), "config", "--keys", "--set",
                          "algorithm.name=no_such_module:Rule"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
