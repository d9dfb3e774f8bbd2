"""Gradient tracking (DIGing-style), optionally with momentum, as in the official QGM code.

Each client gossips its parameters and a tracker `y` of the network-average gradient, so
the payload is twice the model size. The step uses the client's own (pre-gossip) `y`; the
gossiped `ybar` becomes the next round's tracker. With momentum 0 this is plain gradient
tracking, which converges to the exact optimum with a constant lr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# torch is imported where a tensor is made: config validation reads the rules' knobs
# (defaults, checks), and parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.base import (Algorithm, State, finish_round, first_round, new_step_counter, rows_where,
                                     with_weight_decay)
from qgm_ray.algorithms.sgd import momentum_direction


def tracking_pre_mix(
    x: Tensor, grad: Tensor, y: Tensor, g_prev: Tensor, first, weight_decay: float
) -> Tensor:
    """`y <- g` (first round) or `y <- y + g - g_prev`, `g_prev <- g`, in place; payload cat(x, y)
    along the last dim (a block's rows each send their own [x_i, y_i]). `first`: bool or per row."""
    import torch
    g = with_weight_decay(grad, x, weight_decay)
    y.copy_(rows_where(torch.as_tensor(first), g, lambda: y.add(g.sub(g_prev))))
    g_prev.copy_(g)
    return torch.cat([x, y], dim=-1)


def tracking_post_mix(
    mixed: Tensor, y: Tensor, m: Tensor, lr: float, beta: float, nesterov: bool
) -> Tensor:
    n = y.shape[-1]
    xbar, ybar = mixed[..., :n], mixed[..., n:]
    x_new = xbar.add(momentum_direction(m, y, beta, nesterov), alpha=-lr)
    y.copy_(ybar)
    return x_new


class GradientTracking(Algorithm):
    defaults = {"momentum": 0.9, "nesterov": False}

    def __init__(self, name: str, hparams: dict[str, Any] | None = None):
        super().__init__(name, hparams)
        self.momentum: float = self.hparams["momentum"]
        self.nesterov: bool = self.hparams["nesterov"]

    def init(self, params: Tensor) -> State:
        import torch
        return {
            "momentum_buffer": torch.zeros_like(params),
            "tracker": torch.zeros_like(params),
            "prev_grad": torch.zeros_like(params),
            "step": new_step_counter(params),
        }

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return tracking_pre_mix(
            params, grad, state["tracker"], state["prev_grad"], first_round(state), self.weight_decay
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        if mixed.shape[-1] != 2 * params.shape[-1]:
            raise ValueError(
                f"gradient_tracking expects a mixed payload of {2 * params.shape[-1]} values per client "
                f"(params and tracker), got {mixed.shape[-1]}"
            )
        x_new = tracking_post_mix(mixed, state["tracker"], state["momentum_buffer"], lr, self.momentum, self.nesterov)
        finish_round(state)
        return x_new

    def payload_size(self, num_params: int) -> int:
        return 2 * num_params
