"""SGD-family rules: DSGD, DSGDm(-N), Quasi-Global Momentum DSGDm(-N), centralized SGDm(-N).

All of them gossip the parameters after a local step, except the centralized baseline,
which all-reduces raw gradients and then takes one global heavy-ball/Nesterov step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# torch is imported where a tensor is made: config validation reads the rules' knobs
# (defaults, checks), and parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.base import Algorithm, State, finish_round, new_step_counter, with_weight_decay


# The functional core: pure functions over (k, P) rows or (P,) vectors, as torch.optim's.

def momentum_direction(m: Tensor, g: Tensor, beta: float, nesterov: bool, own_g: bool = False) -> Tensor:
    """`m <- beta*m + g` in place; the descent direction is `m` (heavy ball) or `g + beta*m`.
    `own_g`: `g` is the caller's temporary, so the Nesterov direction is written over it
    instead of a new tensor (the same values)."""
    m.mul_(beta).add_(g)
    if not nesterov:
        return m
    return g.add_(m, alpha=beta) if own_g else g.add(m, alpha=beta)


def qg_momentum_update(m: Tensor, progress: Tensor, lr: float, mu: float) -> None:
    """`m <- mu*m + (1-mu)*progress/lr` in place, where progress = x - x+.

    (x - x+)/lr is this round's progress including the gossip step, i.e. a direction
    that already averages the neighbours' gradients; tracking it instead of the local
    gradient is what makes the momentum "quasi-global" on heterogeneous data.
    """
    if lr < 0:
        raise ValueError(f"qg momentum needs lr >= 0, got {lr!r}")
    if lr == 0:
        # (x - x+)/lr is undefined: x moved by gossip alone, with no optimisation step to
        # learn a direction from. Keep the buffer rather than fill it with inf/nan, so a
        # schedule that touches 0 (warm-up from 0, cosine to 0) does not wreck the run.
        return
    m.mul_(mu).add_(progress, alpha=(1.0 - mu) / lr)


def qg_dsgdm_post_mix(x: Tensor, mixed: Tensor, m: Tensor, lr: float, mu: float) -> Tensor:
    """`x+ = mixed` (returned as is: the engine copies it into its parameters), and `m`
    refreshed from the progress x - x+."""
    qg_momentum_update(m, x.sub(mixed), lr, mu)
    return mixed


# Each step below writes the payload over a temporary of its own (`torch.add(..., out=)`):
# the same values as a new tensor, without one more (k, P) allocation per round.

def dsgd_pre_mix(x: Tensor, grad: Tensor, lr: float, weight_decay: float) -> Tensor:
    import torch
    g = with_weight_decay(grad, x, weight_decay)
    return torch.add(x, g, alpha=-lr, out=g)


def dsgdm_pre_mix(
    x: Tensor, grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float, nesterov: bool
) -> Tensor:
    import torch
    g = with_weight_decay(grad, x, weight_decay)
    return torch.add(x, momentum_direction(m, g, beta, nesterov, own_g=True), alpha=-lr, out=g)


def qg_dsgdm_pre_mix(
    x: Tensor, grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float, nesterov: bool
) -> Tensor:
    # The local step uses m_tmp = beta*m + g, but m itself is only refreshed after gossip
    # (from the parameter progress), so m_tmp is a temporary: `m.mul` makes it.
    import torch
    g = with_weight_decay(grad, x, weight_decay)
    m_tmp = m.mul(beta).add_(g)
    if nesterov:
        return torch.add(x, g.add_(m_tmp, alpha=beta), alpha=-lr, out=m_tmp)
    return torch.add(x, m_tmp, alpha=-lr, out=g)


def centralized_sgdm_post_mix(
    x: Tensor, mean_grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float, nesterov: bool
) -> Tensor:
    # Weight decay after the all-reduce: every client holds the same x, so adding it before
    # or after averaging is the same number, and this way the payload is the raw gradient.
    import torch
    gbar = mean_grad.add(x, alpha=weight_decay)
    return torch.add(x, momentum_direction(m, gbar, beta, nesterov, own_g=True), alpha=-lr, out=gbar)


# The rules: thin classes that hold the hyper-parameters and pass their state to the functions above.

class DSGD(Algorithm):
    push_sum = True

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return dsgd_pre_mix(params, grad, lr, self.weight_decay)

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        finish_round(state)
        return mixed


class DSGDm(Algorithm):
    defaults = {"momentum": 0.9}
    push_sum = True

    def __init__(self, name: str, hparams: dict[str, Any] | None = None, nesterov: bool = False):
        super().__init__(name, hparams)
        self.momentum: float = self.hparams["momentum"]
        self.nesterov = nesterov

    def init(self, params: Tensor) -> State:
        import torch
        return {"momentum_buffer": torch.zeros_like(params), "step": new_step_counter(params)}

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return dsgdm_pre_mix(
            params, grad, state["momentum_buffer"], lr, self.momentum, self.weight_decay, self.nesterov
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        finish_round(state)
        return mixed


class QGDSGDm(DSGDm):
    defaults = {"qgm_beta": 0.9}

    def __init__(self, name: str, hparams: dict[str, Any] | None = None, nesterov: bool = False):
        super().__init__(name, hparams, nesterov)
        self.qgm_beta: float = self.hparams["qgm_beta"]

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return qg_dsgdm_pre_mix(
            params, grad, state["momentum_buffer"], lr, self.momentum, self.weight_decay, self.nesterov
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        # `params` is the x that pre_mix stepped from (contract), so x - x+ needs no extra state.
        x_new = qg_dsgdm_post_mix(params, mixed, state["momentum_buffer"], lr, self.qgm_beta)
        finish_round(state)
        return x_new


class CentralizedSGDm(DSGDm):
    centralized = True
    push_sum = False   # its payload is a gradient, all-reduced

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return grad.clone()

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        x_new = centralized_sgdm_post_mix(
            params, mixed, state["momentum_buffer"], lr, self.momentum, self.weight_decay, self.nesterov
        )
        finish_round(state)
        return x_new
