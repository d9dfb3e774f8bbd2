"""The arithmetic of one asynchronous event on a block's rows: the pending gradients, the rule's
pre_mix and post_mix on gathered rows, a gossip mix over payload versions, AD-PSGD's pair mean.

Shared by both engines (AsyncRun in engine/async_run.py, engine/async_ray.py in each
ClientActor): the same functions on the same rows of the same blocks give the same bits.
"""
from __future__ import annotations

import torch

from qgm_ray import contracts


def take_pending_gradients(block) -> None:
    """Step 0's gradients of the block's rows that have none yet (a fresh run's)."""
    rows = torch.nonzero(block.exchange_state["ready"] == 0).reshape(-1).tolist()
    if rows:
        next_gradients(block, rows)


def next_gradients(block, rows: list) -> None:
    """The pending gradient and loss of these rows' next step, on their models as they are now."""
    st = block.exchange_state
    st["grad"][rows] = block.row_gradients(rows)
    st["loss"][rows] = block.losses[rows].to(st["loss"].dtype)
    st["ready"][rows] = 1


def pre_rows(block, rows: list, lr: float) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The rule's pre_mix for these rows of a block, on gathered copies of their state and
    parameters (the other rows do not move): (state, params, payload)."""
    state = {key: v[rows] for key, v in block.state.items()}
    params = block.params[rows]
    out = contracts.call_rule(block.algorithm, "pre_mix", state, params, block.exchange_state["grad"][rows], lr)
    out = contracts.rule_result(block.algorithm, "pre_mix", out, len(rows), block.payload_size, block.params.dtype)
    return state, params, out


def post_rows(block, rows: list, state: dict, params: torch.Tensor, mixed: torch.Tensor, lr: float) -> None:
    """The rule's post_mix for the rows `pre_rows` gathered, scattered back, then their next
    gradients."""
    new = contracts.call_rule(block.algorithm, "post_mix", state, params, mixed, lr)
    block.params[rows] = contracts.rule_result(block.algorithm, "post_mix", new, len(rows), block.num_params,
                                               block.params.dtype)
    for key, v in state.items():
        block.state[key][rows] = v
    next_gradients(block, rows)


def mix_versions(table: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Row e = sum_c weight[e, c] * table[idx[e, c]]: one gather per column, multiplied by the
    first weight, the others added with addcmul in column (increasing source) order, as
    engine/base.py's block_mix sums."""
    out = table[idx[:, 0]] * weight[:, 0:1]
    for c in range(1, idx.shape[1]):
        out.addcmul_(table[idx[:, c]], weight[:, c:c + 1])
    return out


def pair_mean(payload: torch.Tensor, peer: torch.Tensor) -> torch.Tensor:
    """AD-PSGD's average of the initiator's payload with its peer's model (both keep it)."""
    return payload.add(peer).mul_(0.5)
