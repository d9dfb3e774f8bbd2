"""Push-sum gossip (Kempe et al. 2003; Stochastic Gradient Push, Assran et al. 2019) for
column-stochastic mixing matrices (directed graphs, qgm_ray.topology.DIRECTED).

Plain gossip `x_i <- sum_j W_ij x_j` keeps the clients' mean only when W is doubly
stochastic. On a directed graph W is column stochastic only: what a client sends sums to what
it had, but what a client receives need not be a convex combination. Push-sum mixes a
numerator `x_i = w_i z_i` and a scalar weight `w_i` with the same W; the model a client uses,
`z_i = x_i / w_i`, is de-biased, and the numerators' sum is conserved, so the z_i reach the
exact average of what was sent (`sum_i x_i / sum_i w_i`).

An update rule's local step is taken on the de-biased model z and moves the numerator by the
same amount, as in SGP (`x_i <- x_i - lr * d_i`, then mix). The weight travels as one extra
column of the payload, so the engines' `block_mix` carries it unchanged: one (k, P+1) gather
and multiply-add for a block, whatever the engine.
"""
from __future__ import annotations

import torch


def send(payload: torch.Tensor, params: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(k, P+1) push-sum payloads: [w*z + (payload - z), w] per row.

    `payload` is the rule's parameters after its local step from `params` (= z), so
    `payload - z` is the step; SGP applies that step to the numerator w*z."""
    w = weight.to(params.dtype).unsqueeze(1)
    numerator = params.mul(w).add_(payload.sub(params))
    return torch.cat([numerator, w], dim=1)


def receive(mixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(de-biased models z (k, P), new weights w (k,)) from the mixed (k, P+1) rows."""
    w = mixed[:, -1].clone()
    return mixed[:, :-1].div(w.unsqueeze(1)), w


def weighted_mean(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum_i w_i z_i / sum_i w_i: the point push-sum conserves (the clients' consensus)."""
    w = weight.to(rows.dtype)
    return (rows * w.unsqueeze(1)).sum(0) / w.sum()
