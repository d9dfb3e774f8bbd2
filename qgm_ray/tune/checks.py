"""Every trial of a sweep checked before it starts: each grid point's (and each sampled range's
ends') config, and for offline data and plug-ins the prepared data."""
from __future__ import annotations

from typing import Callable

from qgm_ray.errors import ConfigError
from qgm_ray.tune.space import describe_params, grid_points, trial_config


def check_trials(base: dict, tc, log: Callable[[str], None] = print) -> None:
    """Every grid point (and the ends of every sampled range) must be a valid config, and for
    offline data the partition must fit the batch size: fail now, not 20 minutes in."""
    from qgm_ray import data as qdata
    from qgm_ray.runner import run as runner

    probes = [{}]
    for key, spec in tc.search.items():
        (kind, arg), = spec.items()
        probes += [{key: v} for v in (arg if kind == "choice" else arg[:2])]
    # Offline data and plug-ins (whose model output is checked with the data) are prepared now.
    offline = base["data"]["name"] in getattr(qdata, "_OFFLINE", {}) or ":" in base["data"]["name"] \
        or ":" in base["model"]["name"]
    trials = []
    # Every trial's config first: a bad one is refused before any data is prepared (written).
    for point in grid_points(tc):
        for probe in probes:
            params = {**point, **probe}
            try:
                trials.append((params, trial_config(base, params)))
            except ConfigError as e:
                raise ConfigError(f"trial {describe_params(params)}: {e}") from None
    if not offline:
        return
    seen = set()
    for params, cfg in trials:
        d = cfg.to_dict()
        key = repr((d["seed"], d["data"], d["topology"], d["elastic"],
                    d["model"] if ":" in d["model"]["name"] else None))   # a plug-in model: each one built
        if key not in seen:
            seen.add(key)
            try:
                runner.prepare(cfg, log=lambda m: None)
            except ConfigError as e:
                raise ConfigError(f"trial {describe_params(params)}: {e}") from None
