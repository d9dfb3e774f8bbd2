"""What a rule, a compressor or an exchange can declare it needs of a run (NEEDS' names, in a
class attribute `requires`), what CHOCO-Gossip and an asynchronous run need, and the one line
that refuses a config failing a need."""
from __future__ import annotations

from qgm_ray.config.refusal import _require
from qgm_ray.config.schema import Config
from qgm_ray.errors import ConfigError


# What a rule, a compressor or the compressed exchange can declare it needs (a class attribute
# `requires`), with why, written once: each need is refused with one line where it fails.
NEEDS = {
    "fixed_w": "the same W every round",
    "fixed_members": "the same clients all run (no elastic.schedule, no fault_tolerance.on_failure=drop)",
    "undirected": "an undirected (doubly stochastic) graph",
    "gossip": "gossip over W (not an all-reduce rule)",
}
# CHOCO-Gossip (engine/choco.py): s_i = sum_j W_ij x_hat_j is kept up to date with the neighbours'
# compressed differences, which holds only while W stays the same (a resize restarts every x_hat
# and s at zero, so membership may change); push-sum and all-reduce rules mix no such sum.
CHOCO_NEEDS = ("fixed_w", "undirected", "gossip")

# What an asynchronous run needs (qgm_ray/async_schedule.py): one W for every step of every
# client (no rounds to index a time-varying graph by), the same clients the whole run (the
# schedule is computed for them up front) and symmetric links (AD-PSGD's pair averaging).
ASYNC_NEEDS = ("fixed_w", "undirected", "fixed_members", "gossip")


def unmet_needs(cfg: Config, needs, centralized: bool = False) -> list[tuple[str, str]]:
    """[(need, what in the config fails it)] for these needs (NEEDS' names) in this config."""
    from qgm_ray.topology import TIME_VARYING, is_directed

    t = cfg.topology
    directed = is_directed(t.name, t.options, t.n_clients, cfg.seed)
    fails = {
        "fixed_w": (t.name in TIME_VARYING and not centralized, f"topology.name={t.name} is time-varying"),
        "fixed_members": (bool(cfg.elastic.schedule) or cfg.fault_tolerance.on_failure == "drop",
                          "elastic.schedule is set" if cfg.elastic.schedule else "fault_tolerance.on_failure=drop"),
        "undirected": (directed and not centralized, f"topology.name={t.name} is directed (push-sum)"),
        "gossip": (centralized, f"algorithm.name={cfg.algorithm.name} is an all-reduce rule"),
    }
    return [(need, fails[need][1]) for need in needs if fails[need][0]]


def _refuse_unmet(who: str, needs, cfg: Config, centralized: bool, fix: str) -> None:
    unknown = sorted(set(needs) - set(NEEDS))
    _require(not unknown, f"{who} requires {unknown[0] if unknown else ''!r}, which is not a need qgm-ray "
                          f"knows; choose from {', '.join(NEEDS)}")
    for need, why in unmet_needs(cfg, needs, centralized):
        raise ConfigError(f"{who} needs {NEEDS[need]}, but {why}; {fix}")
