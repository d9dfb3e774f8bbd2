"""Name -> update rule, and the two ways of building one from hyper-parameters.

The built-in rules register in `qgm_ray.plugins` like any other factory; `algorithm.name` may
also be a reference `"package.module:Class"` to a subclass of `Algorithm` outside the package.
A factory is the class, or `functools.partial(Class, nesterov=...)` for the `_n` names (for
them Nesterov is part of the name, not a knob).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from qgm_ray import errors, plugins
from qgm_ray.algorithms.ad_psgd import ADPSGD
from qgm_ray.algorithms.adam import DAdam, QGAdam
from qgm_ray.algorithms.base import Algorithm
from qgm_ray.algorithms.d2 import D2
from qgm_ray.algorithms.hparams import SHARED, check_knobs, resolve_hparams
from qgm_ray.algorithms.sgd import DSGD, CentralizedSGDm, DSGDm, QGDSGDm
from qgm_ray.algorithms.tracking import GradientTracking
from qgm_ray.algorithms.variants import CentralizedAdam, D2Official, QGAdamV2, QGDSGDmLocalStep
from qgm_ray.errors import ConfigError

_BUILTINS: dict[str, Callable[..., Algorithm]] = {
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
for _name, _factory in _BUILTINS.items():
    plugins.register("algorithm", _name, _factory)

ALGORITHMS: tuple[str, ...] = tuple(_BUILTINS)

# Rules that run only on the asynchronous clock (clock.mode: async), apart from ALGORITHMS,
# which every engine runs in synchronous rounds.
ASYNC_ALGORITHMS: tuple[str, ...] = ("ad_psgd",)
plugins.register("algorithm", "ad_psgd", ADPSGD)


def _factory(name: str) -> Callable[..., Algorithm]:
    factory = plugins.resolve("algorithm", name)
    cls = factory.func if isinstance(factory, partial) else factory
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ConfigError(f"algorithm.name={name!r} is {_describe(cls)}, not a subclass of qgm_ray.Algorithm")
    check_knobs(cls)
    return factory


def _describe(obj) -> str:
    if isinstance(obj, type):
        return f"the class {obj.__qualname__}"
    return f"a {type(obj).__name__}"


def algorithm_class(name: str) -> type[Algorithm]:
    """The rule class `name` stands for (a registered name or a `module:Class` reference)."""
    factory = _factory(name)
    return factory.func if isinstance(factory, partial) else factory


def accepted_hparams(name: str) -> tuple[str, ...]:
    """The hyper-parameters algorithm `name` reads (ConfigError for an unknown name)."""
    return tuple(algorithm_class(name).knobs())


def own_options(name: str) -> dict[str, Any]:
    """The knobs of rule `name` that `algorithm.options` sets (those that are not shared
    top-level keys), with their defaults."""
    return {k: v for k, v in algorithm_class(name).knobs().items() if k not in SHARED}


def gossips_with_push_sum(name: str) -> bool:
    """Whether rule `name` can run on a directed graph: its payload is the parameters after a
    local step, which push-sum de-biases (SGP). All-reduce rules ignore the graph."""
    cls = algorithm_class(name)
    return cls.push_sum or cls.centralized


def push_sum_algorithms() -> list[str]:
    """The gossiping built-in rules that run on a directed graph (all-reduce ones left out)."""
    return [a for a in ALGORITHMS if algorithm_class(a).push_sum]


def make_algorithm(name: str, **hparams: Any) -> Algorithm:
    """Strict constructor: a hyper-parameter the algorithm does not read is a ConfigError.
    `name`: a registered name or a `"package.module:Class"` reference.

    Built-in defaults: momentum=0.9, weight_decay=1e-4, qgm_beta=0.9, betas=(0.9, 0.999), eps=1e-8,
    nesterov=False (gradient_tracking only; the `_n` names imply Nesterov),
    normalization_eps=1e-8 (qg_adam, qg_adam_v2), qgm_local_step=1 (qg_dsgdm_ls, qg_dsgdm_n_ls).
    """
    name = plugins.canonical("algorithm", name)   # an installed plug-in's short name: its reference
    return _factory(name)(name, hparams)


def make_algorithm_from_config(name: str, hparams: dict[str, Any], options: dict[str, Any] | None = None) -> Algorithm:
    """Lenient for the shared keys, strict for the rule's own options.

    `hparams`: the top-level `algorithm.<key>` values (SHARED). Keys that `name` does not read
    are dropped silently (so a config can carry `qgm_beta` while sweeping over `dsgdm_n` and
    `qg_dsgdm_n`); the kept ones are validated as in `make_algorithm`. `options`:
    `algorithm.options`, the rule's own knobs: an unknown one, or a shared key (set that with
    `algorithm.<key>`), is a ConfigError naming it.
    """
    factory = _factory(name)
    cls = factory.func if isinstance(factory, partial) else factory
    knobs = cls.knobs()
    options = dict(options or {})
    for key in options:
        if key in SHARED:
            raise ConfigError(f"algorithm.options.{key}: {key} is a key every rule shares; "
                              f"set it with algorithm.{key}")
        if key not in knobs:
            own = [k for k in knobs if k not in SHARED]
            raise ConfigError(f"algorithm.options.{key} is not an option of algorithm.name={name!r} "
                              f"({'its options: ' + ', '.join(own) if own else 'it has no options of its own'})")
    given = {key: value for key, value in hparams.items() if key in knobs}
    given.update(options)
    labels = {key: f"algorithm.options.{key}" if key in options else f"algorithm.{key}" for key in given}
    resolved = resolve_hparams(cls, name, given, labels)
    return factory(name, resolved)


def check_state_contract(rule: Algorithm) -> None:
    """A plug-in rule's `init` on a 2-client block: a dict of tensors, one row per client, with
    the `step` counter (the engines read it, and slice every entry per client for checkpoints,
    replays and elastic joiners). A ConfigError naming algorithm.name otherwise."""
    import torch
    where = f"algorithm.name={rule.name!r}"
    try:
        state = rule.init(torch.zeros(2, 3))
    except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
        raise ConfigError(f"{where}: init(params) on a (2, 3) block failed: {errors.described(e)}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ConfigError(f"{where}: init(params) must return a dict of tensors holding 'step' "
                          f"(qgm_ray.new_step_counter(params)), got {type(state).__name__}"
                          f"{' without step' if isinstance(state, dict) else ''}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ConfigError(f"{where}: init(params) state[{key!r}] is {shape}; every entry must be a tensor "
                              f"with one row per client (leading dimension 2 for a (2, 3) block)")
