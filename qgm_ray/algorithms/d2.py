"""D^2 (Tang et al. 2018), as in the official QGM code: no momentum, meant for a constant lr.

D^2 gossips `2x - x_prev - (lr*g - lr_prev*g_prev)`: the correction term cancels the
heterogeneity bias of DSGD, so with a constant lr it reaches the exact optimum of the
average objective (DSGD only reaches a neighbourhood).

With a constant lr this is the official `2x - x_prev - lr*(g - g_prev)` exactly (`d2_official`
in variants.py keeps that form). We keep the previous *step* `lr_prev*g_prev` rather than the
previous gradient because the lr changes (warm-up, decay): with `lr*(g - g_prev)` every lr
change leaves a permanent drift `(lr_prev - lr)*g_prev` in the iterates, and D^2 collapses
after each decay (docs/results/heterogeneity). Differencing the steps keeps the telescoping
that makes D^2 exact. It needs W's smallest eigenvalue > -1/3, which the usual graphs (ring
with weights 1/3 and n > 3 odd or lazy variants) meet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# torch is imported where a tensor is made: config validation reads the rules' knobs
# (defaults, checks), and parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.base import Algorithm, State, finish_round, first_round, new_step_counter, rows_where, with_weight_decay


def d2_pre_mix(
    x: Tensor, grad: Tensor, x_prev: Tensor, step_prev: Tensor, first, lr: float, weight_decay: float
) -> Tensor:
    """Payload of D^2; records x and the step lr*g (g with weight decay) in `x_prev`,
    `step_prev` in place. `first`: bool, or per row of a block (a bool tensor)."""
    import torch
    step = with_weight_decay(grad, x, weight_decay).mul_(lr)
    payload = rows_where(torch.as_tensor(first), lambda: x.sub(step),
                         lambda: (2 * x).sub_(x_prev).sub_(step.sub(step_prev)))
    x_prev.copy_(x)
    step_prev.copy_(step)
    return payload


class D2(Algorithm):

    def init(self, params: Tensor) -> State:
        import torch
        return {
            "prev_params": torch.zeros_like(params),
            "prev_step": torch.zeros_like(params),
            "step": new_step_counter(params),
        }

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return d2_pre_mix(
            params, grad, state["prev_params"], state["prev_step"], first_round(state), lr, self.weight_decay
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        finish_round(state)
        return mixed
