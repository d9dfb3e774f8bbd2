"""The `Algorithm` interface shared by every update rule, and the per-row helpers rules are
written with; a rule's hyper-parameters are checked by algorithms/hparams.py.

An algorithm is a stateless object holding only hyper-parameters; everything that changes
from round to round lives in the `state` dict it returns from `init`, so that a client can
checkpoint it with `torch.save` and an engine can keep many clients' states side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from qgm_ray.algorithms.hparams import _merged, resolve_hparams

# torch is imported where a tensor is made: config validation reads the rules' knobs, and
# parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

State = dict[str, "Tensor"]

__all__ = ["Algorithm", "State", "finish_round", "first_round", "new_step_counter", "rows_where", "step_of",
           "with_weight_decay"]


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
