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


# ---- functional core ------------------------------------------------------------------

def momentum_direction(m: Tensor, g: Tensor, beta: float, nesterov: bool) -> Tensor:
    """`m <- beta*m + g` in place; the descent direction is `m` (heavy ball) or `g + beta*m`."""
    m.mul_(beta).add_(g)
    return g.add(m, alpha=beta) if nesterov else m


def qg_momentum_update(m: Tensor, x: Tensor, x_new: Tensor, lr: float, mu: float) -> None:
    """`m <- mu*m + (1-mu)*(x - x+)/lr` in place.

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
    m.mul_(mu).add_(x.sub(x_new), alpha=(1.0 - mu) / lr)


def dsgd_pre_mix(x: Tensor, grad: Tensor, lr: float, weight_decay: float) -> Tensor:
    return x.add(with_weight_decay(grad, x, weight_decay), alpha=-lr)


def dsgdm_pre_mix(
    x: Tensor, grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float, nesterov: bool
) -> Tensor:
    g = with_weight_decay(grad, x, weight_decay)
    return x.add(momentum_direction(m, g, beta, nesterov), alpha=-lr)


def qg_dsgdm_pre_mix(
    x: Tensor, grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float, nesterov: bool
) -> Tensor:
    # The local step uses m_tmp = beta*m + g, but m itself is only refreshed after gossip
    # (from the parameter progress), so work on a copy.
    g = with_weight_decay(grad, x, weight_decay)
    return x.add(momentum_direction(m.clone(), g, beta, nesterov), alpha=-lr)


def centralized_sgdm_post_mix(
    x: Tensor, mean_grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float, nesterov: bool
) -> Tensor:
    # Weight decay after the all-reduce: every client holds the same x, so adding it before
    # or after averaging is the same number, and this way the payload is the raw gradient.
    gbar = mean_grad.add(x, alpha=weight_decay)
    return x.add(momentum_direction(m, gbar, beta, nesterov), alpha=-lr)


# ---- thin stateful wrappers -------------------------------------------------------------

class DSGD(Algorithm):
    push_sum = True

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return dsgd_pre_mix(params, grad, lr, self.weight_decay)

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        finish_round(state)
        # A copy: `mixed` may be a row view of the engine's W @ payloads matrix.
        return mixed.clone()


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
        return mixed.clone()


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
        x_new = mixed.clone()
        qg_momentum_update(state["momentum_buffer"], params, x_new, lr, self.qgm_beta)
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
