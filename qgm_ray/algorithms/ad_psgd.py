"""AD-PSGD (Lian, Zhang, Zhang & Liu, *Asynchronous Decentralized Parallel Stochastic Gradient
Descent*, ICML 2018): whenever a client finishes computing a gradient, it averages its model
with one neighbour, the pair atomically (both hold the mean afterwards), and then applies its
gradient to the averaged model:

    x_i, x_p <- (x_i + x_p) / 2;    x_i <- x_i - lr * d

with d = g + wd * x (or heavy-ball momentum on it, momentum > 0; the paper's rule is plain SGD,
momentum 0). It runs only on the asynchronous clock (`clock.mode: async`): the engine draws
the peer and times the exchange (qgm_ray/async_schedule.py, kind `pairwise`); this module is
the rule's arithmetic. The payload is the model itself (the average comes first), so the step
is kept in the state between pre_mix and post_mix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.base import Algorithm, State, finish_round, new_step_counter, with_weight_decay
from qgm_ray.algorithms.sgd import momentum_direction


def ad_psgd_step(x: Tensor, grad: Tensor, m: Tensor, lr: float, beta: float, weight_decay: float) -> Tensor:
    """lr * d, the step AD-PSGD applies after the pair average (m updated in place when beta > 0)."""
    g = with_weight_decay(grad, x, weight_decay)
    return (momentum_direction(m, g, beta, False) if beta else g).mul(lr)


class ADPSGD(Algorithm):
    defaults = {"momentum": 0.0, "weight_decay": 1e-4}
    # Averages with one peer at a time, atomically, on the asynchronous clock (config/checks.py refuses
    # it in sync mode; engine/async_run.py runs it).
    pairwise = True

    def init(self, params: Tensor) -> State:
        import torch
        return {"step": new_step_counter(params), "momentum_buffer": torch.zeros_like(params),
                "step_taken": torch.zeros_like(params)}

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        state["step_taken"] = ad_psgd_step(params, grad, state["momentum_buffer"], lr,
                                           self.hparams["momentum"], self.weight_decay)
        return params.clone()

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        out = mixed.sub(state["step_taken"])
        finish_round(state)
        return out
