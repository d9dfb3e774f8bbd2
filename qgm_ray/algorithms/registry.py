"""Name -> update rule, and the two ways of building one from hyper-parameters."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from qgm_ray.algorithms.adam import DAdam, QGAdam
from qgm_ray.algorithms.base import Algorithm, resolve_hparams
from qgm_ray.algorithms.d2 import D2
from qgm_ray.algorithms.sgd import DSGD, CentralizedSGDm, DSGDm, QGDSGDm
from qgm_ray.algorithms.tracking import GradientTracking
from qgm_ray.algorithms.variants import CentralizedAdam, D2Official, QGAdamV2, QGDSGDmLocalStep
from qgm_ray.errors import ConfigError

# The `_n` names are the Nesterov variants; for them Nesterov is part of the name, not a knob.
_FACTORIES: dict[str, Callable[[str, dict[str, Any]], Algorithm]] = {
    "dsgd": DSGD,
    "dsgdm": partial(DSGDm, nesterov=False),
    "dsgdm_n": partial(DSGDm, nesterov=True),
    "qg_dsgdm": partial(QGDSGDm, nesterov=False),
    "qg_dsgdm_n": partial(QGDSGDm, nesterov=True),
    "d2": D2,
    "gradient_tracking": GradientTracking,
    "dadam": DAdam,
    "qg_adam": QGAdam,
    "centralized_sgdm": partial(CentralizedSGDm, nesterov=False),
    "centralized_sgdm_n": partial(CentralizedSGDm, nesterov=True),
    # The official code's variants (algorithms/variants.py).
    "d2_official": D2Official,
    "qg_adam_v2": QGAdamV2,
    "centralized_adam": CentralizedAdam,
    "qg_dsgdm_ls": partial(QGDSGDmLocalStep, nesterov=False),
    "qg_dsgdm_n_ls": partial(QGDSGDmLocalStep, nesterov=True),
}

ALGORITHMS: tuple[str, ...] = tuple(_FACTORIES)


def _algorithm_class(name: str) -> type[Algorithm]:
    if name not in _FACTORIES:
        raise ConfigError(f"unknown algorithm {name!r}; valid names: {', '.join(ALGORITHMS)}")
    factory = _FACTORIES[name]
    return factory.func if isinstance(factory, partial) else factory


def accepted_hparams(name: str) -> tuple[str, ...]:
    """The hyper-parameters algorithm `name` reads (ConfigError for an unknown name)."""
    return _algorithm_class(name).uses


def gossips_with_push_sum(name: str) -> bool:
    """Whether rule `name` can run on a directed graph: its payload is the parameters after a
    local step, which push-sum de-biases (SGP). All-reduce rules ignore the graph."""
    cls = _algorithm_class(name)
    return cls.push_sum or cls.centralized


def push_sum_algorithms() -> list[str]:
    """The gossiping rules that run on a directed graph (the all-reduce ones are left out)."""
    return [a for a in ALGORITHMS if _algorithm_class(a).push_sum]


def make_algorithm(name: str, **hparams: Any) -> Algorithm:
    """Strict constructor: a hyper-parameter the algorithm does not read is a ConfigError.

    Defaults: momentum=0.9, weight_decay=1e-4, qgm_beta=0.9, betas=(0.9, 0.999), eps=1e-8,
    nesterov=False (gradient_tracking only; the `_n` names imply Nesterov),
    normalization_eps=1e-8 (qg_adam, qg_adam_v2), qgm_local_step=1 (qg_dsgdm_ls, qg_dsgdm_n_ls).
    """
    uses = accepted_hparams(name)
    return _FACTORIES[name](name, resolve_hparams(name, uses, hparams))


def make_algorithm_from_config(name: str, hparams: dict[str, Any]) -> Algorithm:
    """Lenient constructor for engines, which hold one hparam set for every algorithm.

    Keys that `name` does not read are dropped silently (so a config can carry `qgm_beta`
    while sweeping over `dsgdm_n` and `qg_dsgdm_n`); the kept ones are validated as in
    `make_algorithm`. Use `make_algorithm` where a stray key should be an error.
    """
    uses = accepted_hparams(name)
    return make_algorithm(name, **{key: value for key, value in hparams.items() if key in uses})
