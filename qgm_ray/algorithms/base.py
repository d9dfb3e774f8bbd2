"""The `Algorithm` interface shared by every update rule, plus hyper-parameter checks.

An algorithm is a stateless object holding only hyper-parameters; everything that changes
from round to round lives in the `state` dict it returns from `init`, so that a client can
checkpoint it with `torch.save` and an engine can keep many clients' states side by side.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from qgm_ray.errors import ConfigError

# torch is imported where a tensor is made: config validation reads the rules' knobs, and
# parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

State = dict[str, "Tensor"]

# The knobs every rule may read from the top-level `algorithm.<key>` config keys (one config
# serves every rule, and a Tune grid over `algorithm.name` compares them at equal settings).
# A rule that reads one declares it in `defaults` with its own default, which applies where
# the user leaves the key unset; SHARED_CHECKS (below) holds each one's range check.
# A rule's other knobs are its own: declared in `defaults`, set with `algorithm.options`.
SHARED = ("momentum", "weight_decay", "qgm_beta", "betas", "eps", "nesterov", "normalization_eps",
          "qgm_local_step")
# Config keys of `algorithm` that are not knobs of a rule: `lr` is passed to every call.
RESERVED = ("name", "lr", "options", "slowmo_tau", "slowmo_beta", "slowmo_alpha")


class Algorithm:
    """One decentralized update rule, split around the gossip step.

    Subclasses implement `pre_mix` and `post_mix` (and `init` when they keep buffers) on a
    block's (k, P) rows or one client's (P,) vector alike; `post_mix` receives the same
    `params` tensor that `pre_mix` received in that round, and the same `lr`. `post_mix` may
    return `mixed` itself (DSGD's x+ is the mixed payload): the engines copy what it returns
    into their parameters before they reuse `mixed`, so no rule spends a pass on a copy.

    Knobs: `defaults` maps each hyper-parameter the rule reads to its default, whose type is
    the knob's type (a float knob takes ints, a tuple knob a list of that length). The dicts
    of a class and its bases are merged, so a subclass only declares what it adds. `checks`
    maps a knob to `f(key, value) -> value` for range checks beyond the type (raise
    ConfigError). The resolved values are `self.hparams`.
    """

    defaults: dict[str, Any] = {"weight_decay": 1e-4}
    checks: dict[str, Callable[[str, Any], Any]] = {}
    # True: the engine must mix with W = 1/n everywhere (an all-reduce), whatever the topology.
    centralized: bool = False
    # True: the payload is the parameters after a local step, so on a directed graph the engine
    # can gossip it with push-sum (SGP; QG-SGP for the quasi-global rules). Rules that mix
    # other quantities (D2's extrapolation, gradient tracking's tracker) need a doubly
    # stochastic W and are refused on directed graphs.
    push_sum: bool = False

    def __init__(self, name: str, hparams: dict[str, Any] | None = None):
        self.name = name
        # The resolved, validated values: `make_algorithm(a.name, **a.hparams)` rebuilds an
        # equal algorithm.
        self.hparams = resolve_hparams(type(self), name, dict(hparams or {}))
        self.weight_decay: float = self.hparams.get("weight_decay", 0.0)

    @classmethod
    def knobs(cls) -> dict[str, Any]:
        """Every knob of this rule with its default (`defaults` merged over the class's bases)."""
        return _merged(cls, "defaults")

    def init(self, params: Tensor) -> State:
        return {"step": new_step_counter(params)}

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        raise NotImplementedError

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        raise NotImplementedError

    def payload_size(self, num_params: int) -> int:
        return num_params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({self.name!r}, {args})"


def _merged(cls, attr: str) -> dict:
    out: dict = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get(attr, {}) or {})
    return out


def new_step_counter(params: Tensor | None = None) -> Tensor:
    """Rounds completed: a scalar for one client's 1-D params, one per row for a block's
    (k, P) params (rows can be at different steps: an elastic joiner starts at 0).
    Kept on the CPU whatever the params' device: reading it (bias corrections, the
    "first step" branches) must not force a GPU sync every round."""
    import torch
    shape = () if params is None else tuple(params.shape[:-1])
    return torch.zeros(shape, dtype=torch.int64)


def step_of(state: State) -> int:
    """The step of a single client (or of a block whose rows are all at the same step)."""
    steps = state["step"]
    if steps.dim() == 0:
        return int(steps)
    lo, hi = int(steps.min()), int(steps.max())
    if lo != hi:
        raise ValueError("step_of: the rows of this block are at different steps; use rows_where")
    return lo


def first_round(state: State) -> Tensor:
    """Per row (or scalar): True where no round has been completed yet."""
    return state["step"] == 0


def rows_where(cond: Tensor, a, b) -> Tensor:
    """`a` where `cond` else `b`, per row of a block (cond: () or (k,) bool on the CPU).
    `a` / `b` are tensors or zero-argument callables; only the branch that is needed is
    computed when every row agrees, which is the case except right after an elastic join."""
    def value(v):
        return v() if callable(v) else v
    if bool(cond.all()):
        return value(a)
    if not bool(cond.any()):
        return value(b)
    import torch
    va, vb = value(a), value(b)
    return torch.where(cond.to(va.device).reshape(*cond.shape, *([1] * (va.dim() - cond.dim()))), va, vb)


def finish_round(state: State) -> None:
    """Count a completed round; every rule calls this at the end of `post_mix`."""
    state["step"] += 1


def with_weight_decay(grad: Tensor, params: Tensor, weight_decay: float) -> Tensor:
    """`g = grad + wd * x` as a fresh tensor: the caller's `grad` is never modified."""
    if weight_decay == 0:
        return grad.clone()
    return grad.add(params, alpha=weight_decay)


# ---- hyper-parameter validation --------------------------------------------------------
# Range checks a rule can name in its `checks` (plug-ins too). Each takes (label, value) and
# returns the value unchanged: the type was checked against the default before, and an
# integer knob stays an integer.

def _real(key: str, value: Any) -> Any:
    # bool is an int subclass; `momentum: true` in YAML is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    return value


def unit_interval(key: str, value: Any) -> Any:
    value = _real(key, value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value!r}")
    return value


def non_negative(key: str, value: Any) -> Any:
    value = _real(key, value)
    if value < 0.0:
        raise ConfigError(f"{key} must be >= 0, got {value!r}")
    return value


def positive(key: str, value: Any) -> Any:
    value = _real(key, value)
    if value <= 0.0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")
    return value


def positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")
    return value


def pair_in_unit_interval(key: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{key} must be two numbers in [0, 1), got {value!r}")
    return tuple(unit_interval(f"{key}[{i}]", v) for i, v in enumerate(value))


# The range of each shared knob, the one place it is written: a value the user sets is checked
# whichever rule runs (a sweep over algorithm.name carries it to rules that ignore it), and a
# rule reading the knob gets it checked again with its own `checks`, if it declares any.
SHARED_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "momentum": unit_interval, "weight_decay": non_negative, "qgm_beta": unit_interval,
    "betas": pair_in_unit_interval, "eps": positive, "normalization_eps": positive,
    "qgm_local_step": positive_int,
}


def check_shared(values: dict[str, Any]) -> None:
    """Range-check the shared knobs the user set (`algorithm.<key>`, None: unset)."""
    for key, value in values.items():
        if value is not None and key in SHARED_CHECKS:
            SHARED_CHECKS[key](f"algorithm.{key}", value)


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (tuple, list)):
        return f"a list of {len(default)} values"
    if isinstance(default, dict):
        return "a mapping"
    return type(default).__name__


def check_type(label: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (a float knob takes ints; a tuple knob a list of the
    same length, element by element), or a one-line ConfigError naming `label`."""
    def bad() -> ConfigError:
        return ConfigError(f"{label} must be {_type_name(default)} (the type of its default "
                           f"{default!r}), got {value!r}")
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(float(value)):
            raise ConfigError(f"{label} must be finite, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(default, (tuple, list)):
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise bad()
        items = [check_type(f"{label}[{i}]", v, d) for i, (v, d) in enumerate(zip(value, default))]
        return tuple(items) if isinstance(default, tuple) else items
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if not isinstance(value, type(default)):
        raise bad()
    return value


def check_knobs(cls) -> dict[str, Any]:
    """The rule's knobs; a knob named like a config key that is not one (lr, name, ...) is a
    ConfigError: the rule would never see the value the user set."""
    knobs = cls.knobs()
    clash = sorted(set(knobs) & set(RESERVED))
    if clash:
        raise ConfigError(f"rule {cls.__qualname__} declares {clash[0]!r} in `defaults`, but algorithm.{clash[0]} "
                          f"is not a knob of a rule ({'the lr is passed to pre_mix / post_mix' if clash[0] == 'lr' else 'qgm-ray reads it'}); "
                          f"rename the knob")
    return knobs


def resolve_hparams(cls, name: str, given: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Defaults of rule class `cls`, overridden by `given`, type- and range-checked.

    A key the rule does not declare is a ConfigError: passing `nesterov` to `dsgd` or
    `qgm_beta` to `dsgdm_n` would otherwise be silently ignored and the run would not be
    what was asked. `labels`: how to name a key in a message (default: "algorithm
    hyper-parameter 'key'")."""
    knobs = check_knobs(cls)
    unknown = sorted(set(given) - set(knobs))
    if unknown:
        raise ConfigError(
            f"algorithm {name!r} does not accept hyper-parameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(knobs) or 'none'}"
        )
    labels = labels or {}
    checks = _merged(cls, "checks")
    resolved = {}
    for key, default in knobs.items():
        label = labels.get(key, f"algorithm hyper-parameter {key!r}")
        value = check_type(label, given[key], default) if key in given else default
        for check in (SHARED_CHECKS.get(key), checks.get(key)):
            if check is not None:
                value = check(label, value)
        resolved[key] = value
    return resolved
