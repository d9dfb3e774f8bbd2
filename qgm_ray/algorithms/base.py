"""The `Algorithm` interface shared by every update rule, plus hyper-parameter checks.

An algorithm is a stateless object holding only hyper-parameters; everything that changes
from round to round lives in the `state` dict it returns from `init`, so that a client can
checkpoint it with `torch.save` and an engine can keep many clients' states side by side.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from qgm_ray.errors import ConfigError

State = dict[str, Tensor]

# Defaults from DESIGN.md ("Algorithm contract"). An algorithm accepts only the keys it reads.
DEFAULTS: dict[str, Any] = {
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "qgm_beta": 0.9,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "nesterov": False,
    "normalization_eps": 1e-8,  # QG-Adam: eps of the progress normalisation (not Adam's eps)
    "qgm_local_step": 1,        # qg_dsgdm_ls: rounds between quasi-global buffer refreshes
}


class Algorithm:
    """One decentralized update rule, split around the gossip step.

    Subclasses set `uses` (the hyper-parameters they read) and implement `init`, `pre_mix`
    and `post_mix`. `post_mix` receives the same `params` tensor that `pre_mix` received
    in that round, and the same `lr`.
    """

    uses: tuple[str, ...] = ("weight_decay",)
    # True: the engine must mix with W = 1/n everywhere (an all-reduce), whatever the topology.
    centralized: bool = False
    # True: the payload is the parameters after a local step, so on a directed graph the engine
    # can gossip it with push-sum (SGP; QG-SGP for the quasi-global rules). Rules that mix
    # other quantities (D2's extrapolation, gradient tracking's tracker) need a doubly
    # stochastic W and are refused on directed graphs.
    push_sum: bool = False

    def __init__(self, name: str, hparams: dict[str, Any]):
        self.name = name
        # Only the user-settable, resolved values: `make_algorithm(a.name, **a.hparams)`
        # rebuilds an equal algorithm.
        self.hparams = dict(hparams)
        self.weight_decay: float = hparams["weight_decay"]

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


def new_step_counter(params: Tensor | None = None) -> Tensor:
    """Rounds completed: a scalar for one client's 1-D params, one per row for a block's
    (k, P) params (rows can be at different steps: an elastic joiner starts at 0).
    Kept on the CPU whatever the params' device: reading it (bias corrections, the
    "first step" branches) must not force a GPU sync every round."""
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

def _real(key: str, value: Any) -> float:
    # bool is an int subclass; `momentum: true` in YAML is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be finite, got {value!r}")
    return value


def _unit_interval(key: str, value: Any) -> float:
    value = _real(key, value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be in [0, 1), got {value!r}")
    return value


def _non_negative(key: str, value: Any) -> float:
    value = _real(key, value)
    if value < 0.0:
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be >= 0, got {value!r}")
    return value


def _positive(key: str, value: Any) -> float:
    value = _real(key, value)
    if value <= 0.0:
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be > 0, got {value!r}")
    return value


def _betas(key: str, value: Any) -> tuple[float, float]:
    # YAML gives a list; a tuple keeps hparams hashable-looking and matches torch.optim.Adam.
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ConfigError(
            f"algorithm hyper-parameter {key!r} must be a pair [beta1, beta2], got {value!r}"
        )
    return (_unit_interval(f"{key}[0]", value[0]), _unit_interval(f"{key}[1]", value[1]))


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be true or false, got {value!r}")
    return value


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"algorithm hyper-parameter {key!r} must be an integer >= 1, got {value!r}")
    return value


VALIDATORS = {
    "momentum": _unit_interval,
    "weight_decay": _non_negative,
    "qgm_beta": _unit_interval,
    "betas": _betas,
    "eps": _positive,
    "nesterov": _boolean,
    "normalization_eps": _positive,
    "qgm_local_step": _positive_int,
}
assert VALIDATORS.keys() == DEFAULTS.keys()


def resolve_hparams(name: str, uses: tuple[str, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Defaults for the keys in `uses`, overridden by `given`, validated.

    A key outside `uses` is a ConfigError: passing `nesterov` to `dsgd` or `qgm_beta` to
    `dsgdm_n` would otherwise be silently ignored and the run would not be what was asked.
    """
    unknown = sorted(set(given) - set(uses))
    if unknown:
        raise ConfigError(
            f"algorithm {name!r} does not accept hyper-parameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(uses)}"
        )
    resolved = {key: DEFAULTS[key] for key in uses}
    resolved.update(given)
    return {key: VALIDATORS[key](key, value) for key, value in resolved.items()}
