"""The search space: the `tune:` section as Tune's param_space (grid_search, samplers), a trial's
values as dotted keys and its Config, and the short text that names a trial."""
from __future__ import annotations

from qgm_ray import grid as tune_grid
from qgm_ray.config import Config, from_dict, trial_dict
from qgm_ray.errors import ConfigError


# Short labels for trial names and progress lines.
_SHORT = {"algorithm.name": "", "data.alpha": "alpha", "seed": "seed", "algorithm.lr": "lr",
          "topology.name": "", "topology.n_clients": "n", "compression.op": ""}


def _sampler(key: str, spec: dict):
    from ray import tune
    (kind, arg), = spec.items()
    if kind == "choice":
        return tune.choice(list(arg))
    lo, hi = arg
    if kind == "uniform":
        return tune.uniform(lo, hi)
    if kind == "loguniform":
        return tune.loguniform(lo, hi)
    if kind == "randint":
        return tune.randint(lo, hi + 1)  # [lo, hi] inclusive, as written in the config
    raise ConfigError(f"tune.search.{key}: unknown distribution {kind!r}")


def _grid_search(key: str, values: list):
    """A grid key as Tune's search space: a conditional key's branches are grid_search over
    their dicts, each branch's lists grid_search again (Tune expands them inside the branch)."""
    from ray import tune
    if not tune_grid.is_conditional(key, values):
        return tune.grid_search(list(values))
    return tune.grid_search([{sub: tune.grid_search(list(v)) if isinstance(v, list) else v
                              for sub, v in branch.items()} for branch in values])


def param_space(tc) -> dict:
    """{key: grid_search | sampler}: Tune expands the grid, samples the rest. A trial's config
    comes back with a conditional key's branch as a dict: `trial_params` makes it dotted keys."""
    space = {k: _grid_search(k, v) for k, v in tc.grid.items()}
    space.update({k: _sampler(k, spec) for k, spec in tc.search.items()})
    return space


def trial_params(config: dict) -> dict:
    """A trial's values as dotted keys, from the config Tune gives the trial."""
    return tune_grid.flatten(config)


def grid_points(tc) -> list[dict]:
    """Every grid combination as dotted keys (without the sampled keys)."""
    return tune_grid.points(tc.grid)


def grid_keys(tc) -> list[str]:
    """Every dotted key a grid point or a sample sets: the parameter columns of results.csv."""
    return tune_grid.keys(tc.grid) + [k for k in tc.search if k not in tc.grid]


def count_trials(tc) -> int:
    return tune_grid.count(tc.grid) * tc.num_samples


def trial_config(base: dict, params: dict) -> Config:
    return from_dict(trial_dict(base, params))


def describe_params(params: dict) -> str:
    """`qg_dsgdm_n alpha=0.1 seed=2`: the trial's values, shortest readable form."""
    parts = []
    for key, value in params.items():
        label = _SHORT.get(key, key.rsplit(".", 1)[-1])
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{label}={text}" if label else text)
    return " ".join(parts)


def _trial_name(trial) -> str:
    safe = describe_params(trial_params(trial.config)).replace(" ", "_").replace("=", "")
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in safe)
    return f"{safe}_{trial.trial_id}"
