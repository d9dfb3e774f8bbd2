"""Each client's own model of a block (engine/block.py) evaluated on the test set: on a GPU one
vmapped forward for a chunk of rows per test batch, on CPU one model at a time, which is faster
there (docs/results/bench)."""
from __future__ import annotations

import copy

import torch
from torch.func import functional_call, vmap

from qgm_ray.data import to_float
from qgm_ray.engine.block_state import flat_buffers
from qgm_ray.flat_model import evaluate_model, load_params


def evaluate_rows(block, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[float]:
    """Test accuracy of each client's own model, in row order."""
    if block.device.type == "cuda":
        return evaluate_packed(block, x, y, batch_size)
    if block.eval_model is None:
        block.eval_model = copy.deepcopy(block.model)
    bufs = flat_buffers(block)
    accs = []
    for i in range(block.k):
        load_params(block.eval_model, block.params[i], bufs[i])
        accs.append(evaluate_model(block.eval_model, x, y, batch_size, block.table)[0])
    return accs


@torch.no_grad()
def evaluate_packed(block, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[float]:
    """`evaluate_rows` as vmapped forwards over the rows (the GPU's way, on any device)."""
    # `chunk` rows per call (what fits the GPU for training), each on at least a training
    # batch of test samples (a forward without saved activations needs less than that step),
    # or on batch_size / rows samples when that is more.
    rows = block.chunk
    per_row = max(block.batch_size, batch_size // rows)
    forward = vmap(lambda p, b, xb: functional_call(block.model, (p, b), (xb,)), in_dims=(0, 0, None))
    views = block.param_views(block.params)
    correct = torch.zeros(block.k, dtype=torch.long, device=block.device)
    was_training = block.model.training
    block.model.eval()
    try:
        for a in range(0, block.k, rows):
            r = slice(a, min(a + rows, block.k))
            p = {n: v[r] for n, v in views.items()}
            b = {n: v[r] for n, v in block.buffers.items()}
            for start in range(0, len(x), per_row):
                logits = forward(p, b, to_float(x[start:start + per_row], block.table))
                correct[r] += (logits.argmax(-1) == y[start:start + per_row]).sum(-1)
    finally:
        block.model.train(was_training)
    n = max(1, len(x))
    return [c / n for c in correct.tolist()]
