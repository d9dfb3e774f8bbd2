"""Adam-family rules: decentralized Adam and the official code's Quasi-Global Adam.

Bias corrections use t = step + 1 with `step` the number of completed rounds, as the
official code does with `local_index + 1`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

# torch is imported where a tensor is made: config validation reads the rules' knobs
# (defaults, checks), and parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.base import Algorithm, State, finish_round, new_step_counter, with_weight_decay

# The official default of `slow_buffer_conf normalization_eps`; not Adam's eps. A
# hyper-parameter (`normalization_eps`) of qg_adam and qg_adam_v2.
NORMALIZATION_EPS = 1e-8


def adam_step(x: Tensor, m1: Tensor, m2: Tensor, t, lr: float, betas: tuple[float, float], eps: float,
              own_m2: bool = False) -> Tensor:
    """`x - lr/bc1 * m1 / (sqrt(m2)/sqrt(bc2) + eps)` as a new tensor. `t`: an int, or one
    per row of a block (a CPU tensor: each row's bias correction is its own). `own_m2`: m2 is
    the caller's temporary, so its square root is taken in place. The denominator is one
    temporary, which the step is then written over (the same values as new tensors)."""
    import torch
    beta1, beta2 = betas
    ts = torch.as_tensor(t)
    if ts.dim() == 0 or bool((ts == ts.reshape(-1)[0]).all()):
        # Every row at the same step (always, except right after an elastic join): the
        # single-client arithmetic, with Python-float corrections.
        t = int(ts.reshape(-1)[0])
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        denom = (m2.sqrt_() if own_m2 else m2.sqrt()).div_(math.sqrt(bias_correction2)).add_(eps)
        return torch.addcdiv(x, m1, denom, value=-lr / bias_correction1, out=denom)
    steps = [int(v) for v in ts.reshape(-1)]
    col = (len(steps),) + (1,) * (x.dim() - ts.dim())

    def column(values):
        return torch.tensor(values, dtype=x.dtype).reshape(col).to(x.device)
    sqrt_bc2 = column([math.sqrt(1 - beta2**s) for s in steps])
    step_size = column([-lr / (1 - beta1**s) for s in steps])
    denom = (m2.sqrt() / sqrt_bc2).add_(eps)
    return x.add(m1.div(denom).mul_(step_size))


def dadam_pre_mix(
    x: Tensor, grad: Tensor, m1: Tensor, m2: Tensor, t: int,
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
) -> Tensor:
    beta1, beta2 = betas
    g = with_weight_decay(grad, x, weight_decay)
    m1.mul_(beta1).add_(g, alpha=1 - beta1)
    m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    return adam_step(x, m1, m2, t, lr, betas, eps)


def qg_adam_pre_mix(
    x: Tensor, grad: Tensor, m1: Tensor, m2: Tensor, t: int,
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
) -> Tensor:
    # The moments are only refreshed after gossip, from the normalised parameter progress;
    # the local step uses temporaries. `e1` adds g with weight 1 (not 1 - beta1): this is the
    # official code's variant, kept as is so results are comparable.
    beta1, beta2 = betas
    g = with_weight_decay(grad, x, weight_decay)
    e1 = m1.mul(beta1).add_(g)
    e2 = m2.mul(beta2).addcmul_(g, g, value=1 - beta2)
    return adam_step(x, e1, e2, t, lr, betas, eps, own_m2=True)


def qg_adam_post_mix(
    x: Tensor, x_new: Tensor, m1: Tensor, m2: Tensor, betas: tuple[float, float],
    normalization_eps: float = NORMALIZATION_EPS,
) -> Tensor:
    """Refresh the moments from the normalised progress x - x+; returns x+ (`x_new` as is: the
    engine copies it into its parameters)."""
    # Normalising the progress (over each client's flat vector) makes the moments track the
    # direction of the network's movement, independent of lr and of its scale.
    beta1, beta2 = betas
    d = x.sub(x_new)
    d.div_(d.norm(p=2, dim=-1, keepdim=True) + normalization_eps)   # per client (row) of a block
    m1.mul_(beta1).add_(d, alpha=1 - beta1)
    m2.mul_(beta2).addcmul_(d, d, value=1 - beta2)
    return x_new


class _AdamBase(Algorithm):
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8}
    push_sum = True

    def __init__(self, name: str, hparams: dict[str, Any] | None = None):
        super().__init__(name, hparams)
        self.betas: tuple[float, float] = self.hparams["betas"]
        self.eps: float = self.hparams["eps"]

    def init(self, params: Tensor) -> State:
        import torch
        return {"exp_avg": torch.zeros_like(params), "exp_avg_sq": torch.zeros_like(params), "step": new_step_counter(params)}


class DAdam(_AdamBase):
    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return dadam_pre_mix(
            params, grad, state["exp_avg"], state["exp_avg_sq"], state["step"] + 1,
            lr, self.betas, self.eps, self.weight_decay,
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        finish_round(state)
        return mixed


class QGAdam(_AdamBase):
    defaults = {"normalization_eps": NORMALIZATION_EPS}

    def __init__(self, name: str, hparams: dict[str, Any] | None = None):
        super().__init__(name, hparams)
        self.normalization_eps: float = self.hparams["normalization_eps"]

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return qg_adam_pre_mix(
            params, grad, state["exp_avg"], state["exp_avg_sq"], state["step"] + 1,
            lr, self.betas, self.eps, self.weight_decay,
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        x_new = qg_adam_post_mix(params, mixed, state["exp_avg"], state["exp_avg_sq"], self.betas,
                                 self.normalization_eps)
        finish_round(state)
        return x_new
