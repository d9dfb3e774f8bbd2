"""The `tune:` section's checks: grid and search keys name config keys, each value list or search
space has its shape, a sweep stays within MAX_TRIALS, `tune.metric` is one a trial reports."""
from __future__ import annotations

import math
from typing import Any

from qgm_ray import grid as tune_grid
from qgm_ray.config.layers import get_dotted
from qgm_ray.config.limits import MAX_TRIALS
from qgm_ray.config.refusal import _require, _short
from qgm_ray.config.schema import TUNE_METRICS, Config
from qgm_ray.errors import ConfigError


def _validate_tune(cfg: Config) -> None:
    base = Config().to_dict()
    tc = cfg.tune
    _require(1 <= tc.num_samples <= MAX_TRIALS,
             f"tune.num_samples must be in [1, {MAX_TRIALS:,}], got {_short(tc.num_samples)}")
    shape = tune_grid.problem(tc.grid)
    _require(shape is None, shape)
    _require(tc.num_samples * tune_grid.count(tc.grid) <= MAX_TRIALS,
             f"tune.grid with tune.num_samples={tc.num_samples} makes more than {MAX_TRIALS:,} trials "
             f"(grid points x num_samples); at most {MAX_TRIALS:,} in one sweep")
    for key, values in tc.grid.items():
        if tune_grid.is_conditional(key, values):
            # A section's branches: the key is a whole section, each key under it a config key.
            _require(isinstance(base.get(key), dict),
                     f"tune.grid.{key}: branches (a list of mappings) go under a config section "
                     f"({', '.join(k for k, v in base.items() if isinstance(v, dict) and k != 'tune')}), "
                     f"not {key!r}")
            for sub in tune_grid.keys({key: values}):
                _check_tune_key("grid", sub, base)
        else:
            _check_tune_key("grid", key, base)
            _require(isinstance(values, list) and len(values) > 0,
                     f"tune.grid.{key} must be a non-empty list of values, got {values!r}")
    for key, values in tc.search.items():
        _check_tune_key("search", key, base)
        _validate_search(key, values)
    _require(tc.metric in TUNE_METRICS,
             f"tune.metric={tc.metric!r} is not a reported metric; choose one of {', '.join(TUNE_METRICS)}")
    _require(tc.max_concurrent_trials >= 0,
             f"tune.max_concurrent_trials must be >= 0 (0: as many as resources allow), got {tc.max_concurrent_trials}")
    _require(tc.grace_period_evals >= 1, f"tune.grace_period_evals must be >= 1, got {tc.grace_period_evals}")


def _check_tune_key(section: str, key: str, base: dict) -> None:
    try:
        # `<section>.options.<knob>`: a rule's, model's, dataset's or graph's own option,
        # checked when each trial's config is built (tune.check_trials).
        parts = key.split(".")
        if not (len(parts) == 3 and parts[1] == "options" and isinstance(base.get(parts[0]), dict)
                and "options" in base[parts[0]]):
            get_dotted(base, key)
    except (KeyError, TypeError):
        raise ConfigError(f"tune.{section}: {key!r} is not a config key (use dotted keys like data.alpha)") from None


def _validate_search(key: str, spec: Any) -> None:
    usage = (f"tune.search.{key} must be {{uniform|loguniform: [lo, hi]}} (numbers, lo < hi), "
             f"{{randint: [lo, hi]}} (integers) or {{choice: [v1, v2, ...]}}, got {spec!r}")
    _require(isinstance(spec, dict) and len(spec) == 1
             and next(iter(spec)) in ("uniform", "loguniform", "choice", "randint"), usage)
    (kind, arg), = spec.items()
    if kind == "choice":
        _require(isinstance(arg, list) and len(arg) > 0, usage)
        return
    num = int if kind == "randint" else (int, float)
    _require(isinstance(arg, list) and len(arg) == 2
             and all(isinstance(x, num) and not isinstance(x, bool) and math.isfinite(x) for x in arg)
             and arg[0] < arg[1], usage)
    _require(kind != "loguniform" or arg[0] > 0, f"tune.search.{key}: loguniform needs lo > 0, got {arg!r}")
