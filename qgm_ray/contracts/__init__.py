"""Checks a plug-in's contract on a tiny batch before the run starts.

A user's rule, model or dataset (README, "Bring your own method") that breaks what qgm-ray
expects of it would otherwise fail deep inside a round as a long traceback, or run on with
wrong numbers (an integer payload truncates every weight and the run still completes).
`check_plugins(cfg, ds)` runs each plug-in the config names once, on its own copies and a
batch of two samples, before the run directory is written or any actor starts. Each broken
contract is one `ContractError` line naming the plug-in, what it returned and what was
expected. The blocks call `rule_result` and `call_rule` every round: those checks read only
a tensor's type, shape and dtype (no device sync), so a rule that breaks its contract later in
a run stops at that round with the same kind of line.

Nothing here changes a valid run: the model is a fresh build (make_model seeds its own
generator), the rule steps fresh state on copies of the parameters, and the global torch,
numpy and random generators are restored after the checks, whatever a plug-in drew from them.

The parts: error.py (ContractError and the words of its lines), rules.py (a rule's results),
models.py (a model and its data); `check_plugins` here tries the data, the model, then the
rule, and every name stays importable from `qgm_ray.contracts`.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from qgm_ray import plugins
from qgm_ray.contracts.error import ContractError, crossing_ray, first_line, rule_key
from qgm_ray.contracts.models import PROBE_SAMPLES, check_features, check_model
from qgm_ray.contracts.rules import call_rule, check_rule, rule_result


def check_plugins(cfg, ds) -> None:
    """Every plug-in the run names, tried once before anything starts (see the module doc).
    Built-in names are left alone: their contract is the test suite's."""
    with _random_state_kept():
        _check_plugins(cfg, ds)


@contextlib.contextmanager
def _random_state_kept():
    # A plug-in may draw from the global generators (a noisy rule, a model with dropout): the
    # run's draws must be those of a run without the checks.
    py, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)


def _check_plugins(cfg, ds) -> None:
    from qgm_ray import build
    from qgm_ray.algorithms import make_algorithm_from_config
    data_key, model_key = plugins.KEYS["data"], plugins.KEYS["model"]
    named = {kind: plugins.is_reference(getattr(cfg, kind).name) for kind in ("data", "model", "algorithm")}
    if named["data"]:
        check_features(f"{data_key}={cfg.data.name!r}", ds)
    if not any(named.values()):
        return
    model = build.build_model(cfg, ds)
    params, grad = check_model(f"{model_key}={cfg.model.name!r}", model, ds, f"{data_key}={cfg.data.name!r}")
    if named["algorithm"]:
        rule = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
        check_rule(rule, params, grad, float(cfg.algorithm.lr))


__all__ = ["PROBE_SAMPLES", "ContractError", "call_rule", "check_features", "check_model", "check_plugins",
           "check_rule", "crossing_ray", "first_line", "rule_key", "rule_result"]
