"""A block's per-client state (engine/block.py): checkpoints stay per client whatever the block.
`client_state(block, i)` slices row i into the format of a lone client, `load_client_state`
writes it back, so `--resume`, replays and elastic resizes work whatever the blocks were when
the checkpoint was written; `reset_rows` starts elastic joiners in their rows only. The float
buffers travel flattened per row (`flat_buffers`), as checkpoints and averaging take them."""
from __future__ import annotations

from typing import Optional, Sequence

import torch


def fresh_state(algorithm, params: torch.Tensor) -> dict:
    """The rule's state of fresh clients at these (rows, P) params."""
    state = algorithm.init(params)
    # A rule written for one client may count steps with a scalar: give each row its own.
    rows = params.shape[0]
    return {key: v.expand(rows).clone() if v.dim() == 0 else v for key, v in state.items()}


def float_buffer_names(block) -> list[str]:
    return [n for n, b in block.buffers.items() if b.is_floating_point()]


def flat_buffers(block) -> torch.Tensor:
    """(k, B): each client's floating-point buffers (BatchNorm running stats), flattened in
    the model's buffer order (B may be 0)."""
    names = float_buffer_names(block)
    if not names:
        return torch.zeros(block.k, 0, device=block.device)
    return torch.cat([block.buffers[n].reshape(block.k, -1).float() for n in names], dim=1)


def load_flat_buffers(block, rows, flat: torch.Tensor) -> None:
    """Write `flat` (`flat_buffers`' layout) into the buffers of these rows."""
    offset = 0
    for n in float_buffer_names(block):
        b = block.buffers[n]
        size = b[0].numel()
        b[rows] = flat[..., offset:offset + size].reshape(b[rows].shape).to(b.dtype)
        offset += size


def client_state(block, i: int, flat: Optional[torch.Tensor] = None) -> dict:
    """Client i's checkpoint (CPU tensors): the format of a lone client, whatever the block.
    `flat`: the block's `flat_buffers`, when the caller has them already."""
    bufs = flat_buffers(block) if flat is None else flat
    state = {
        "id": block.ids[i],
        "params": block.params[i].detach().cpu().clone(),
        "buffers": bufs[i].cpu().clone(),
        "algorithm": {key: v[i].detach().cpu().clone() for key, v in block.state.items()},
        "sampler": block.samplers[i].state_dict(),
    }
    if block.push_sum:
        state["push_sum_weight"] = block.weight[i].detach().cpu().clone()
    if block.exchange_state:
        state["exchange"] = {key: v[i].detach().cpu().clone() for key, v in block.exchange_state.items()}
    return state


def client_states(block) -> list[dict]:
    """Every client's checkpoint, in row order."""
    bufs = flat_buffers(block)   # once for the block, not once per client
    return [client_state(block, i, bufs) for i in range(block.k)]


def load_client_state(block, i: int, s: dict) -> None:
    """Row i becomes the client of checkpoint `s`."""
    block.params[i] = s["params"].to(block.device)
    if s["buffers"].numel():
        load_flat_buffers(block, i, s["buffers"].to(block.device))
    for key, v in s["algorithm"].items():
        block.state[key][i] = v.to(block.state[key].device)
    block.samplers[i].load_state_dict(s["sampler"])
    if block.push_sum:
        # A checkpoint of an undirected run has no weight: its clients hold plain models (w = 1).
        block.weight[i] = s["push_sum_weight"].to(block.device) if "push_sum_weight" in s else 1.0
    # A state without them (an uncompressed run's, or one whose W has changed since:
    # engine/choco.py) starts the exchange's rows where a new run does, at zero.
    saved = s.get("exchange", {})
    for key, v in block.exchange_state.items():
        v[i] = saved[key].to(v.device) if key in saved else 0.0


def reset_rows(block, rows: Sequence[int], params: torch.Tensor, buffers: Optional[torch.Tensor] = None) -> None:
    """Elastic joiners: these rows start from `params` (and buffers) with fresh algorithm
    state in their rows only; the other rows keep theirs (and their step counts)."""
    rows = list(rows)
    if not rows:
        return
    block.params[rows] = params.to(block.device)
    if buffers is not None and buffers.numel():
        load_flat_buffers(block, rows, buffers.to(block.device).expand(len(rows), -1))
    fresh = fresh_state(block.algorithm, block.params[rows])
    for key, v in fresh.items():
        block.state[key][rows] = v.to(block.state[key].device)
    if block.push_sum:
        block.weight[rows] = 1.0
