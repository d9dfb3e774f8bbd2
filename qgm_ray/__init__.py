"""qgm-ray: decentralized deep learning on heterogeneous data, on Ray.

The stable Python API (README, "Python API" and "Bring your own method"):

    import qgm_ray
    cfg = qgm_ray.load_config("examples/byo.yaml", ["backend=ray"])
    result = qgm_ray.run(cfg)                  # .summary, .history (DataFrame), .run_dir
    sweep = qgm_ray.sweep(cfg)                 # a Ray Tune sweep: .results (DataFrame), .sweep_dir

and the pieces an update rule is written with (`Algorithm` and its per-row helpers). Names
are resolved on first use, so `import qgm_ray` loads neither torch nor Ray.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # running
    "load_config": "qgm_ray.api",
    "run": "qgm_ray.api",
    # `sweep`, not `tune`: qgm_ray.tune is the package that runs it on Ray Tune
    "sweep": "qgm_ray.api",
    "load_run": "qgm_ray.api",
    "release_actors": "qgm_ray.api",
    "RunResult": "qgm_ray.api",
    "SweepResult": "qgm_ray.api",
    "Config": "qgm_ray.config",
    "ConfigError": "qgm_ray.errors",
    # writing a rule: the block contract of docs/design.md, on (k, P) rows or one (P,) vector
    "Algorithm": "qgm_ray.algorithms.base",
    "State": "qgm_ray.algorithms.base",
    "finish_round": "qgm_ray.algorithms.base",
    "first_round": "qgm_ray.algorithms.base",
    "rows_where": "qgm_ray.algorithms.base",
    "step_of": "qgm_ray.algorithms.base",
    "new_step_counter": "qgm_ray.algorithms.base",
    "with_weight_decay": "qgm_ray.algorithms.base",
    "unit_interval": "qgm_ray.algorithms.hparams",
    "non_negative": "qgm_ray.algorithms.hparams",
    "positive": "qgm_ray.algorithms.hparams",
    "positive_int": "qgm_ray.algorithms.hparams",
    # trying a plug-in by hand (a name or "package.module:attr", as in a config)
    "make_algorithm": "qgm_ray.algorithms.registry",
    "make_model": "qgm_ray.models",
    "make_topology": "qgm_ray.topology",
    "load_dataset": "qgm_ray.data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qgm_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value   # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
