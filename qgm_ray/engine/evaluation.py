"""The averaged model, the same for both engines: the mean of the clients' rows, evaluated on
the test set. LocalEngine holds one; on Ray the first ClientActor does (engine/actor_evaluation.py).
With push-sum (directed graphs) the mean is weighted by the clients' push-sum weights: the
point push-sum conserves, sum_i w_i z_i / sum_i w_i."""
from __future__ import annotations

from typing import Optional

import torch

from qgm_ray import build
from qgm_ray.config import Config
from qgm_ray.data import Dataset, pixel_table
from qgm_ray.engine.base import consensus_distance
from qgm_ray.engine.push_sum import weighted_mean
from qgm_ray.flat_model import evaluate_model, load_params


# Local models: each client's own model on the whole test set costs n x T forwards, and T grows
# with n when the data does (4,096 clients x 65k test samples: 268M forwards, far more than a
# round; docs/results/scale/README.md). Above this many forwards per evaluation every client's
# model is evaluated on the same seeded subset of LOCAL_EVAL_BUDGET // n test samples (at least
# LOCAL_EVAL_MIN): the mean over clients stays an unbiased estimate made of about
# LOCAL_EVAL_BUDGET forwards. Runs of the paper's size (32 clients x 10k samples) are below it.
LOCAL_EVAL_BUDGET = 2 ** 21
LOCAL_EVAL_MIN = 256


def local_eval_rows(n_clients: int, test_len: int, seed: int) -> Optional[torch.Tensor]:
    """Indices of the test samples the local models are evaluated on; None: all of them."""
    if n_clients * test_len <= LOCAL_EVAL_BUDGET:
        return None
    m = max(LOCAL_EVAL_MIN, LOCAL_EVAL_BUDGET // n_clients)
    if m >= test_len:
        return None
    keep = torch.randperm(test_len, generator=torch.Generator().manual_seed(int(seed)))[:m]
    return keep.sort().values


def local_test_set(x: torch.Tensor, y: torch.Tensor, n_clients: int, seed: int) -> tuple:
    """(x, y) the local models are evaluated on (both engines call this)."""
    rows = local_eval_rows(n_clients, len(x), seed)
    return (x, y) if rows is None else (x[rows.to(x.device)], y[rows.to(y.device)])


def average_rows(params: torch.Tensor, buffers: torch.Tensor,
                 weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(params, float buffers) of the clients' average: the mean over the rows (n, P) / (n, B),
    the parameters weighted by push-sum `weights` (n,) when given (buffers are not gossiped:
    a plain mean). Also what elastic joiners start from."""
    p = params.mean(0) if weights is None else weighted_mean(params, weights)
    return p, (buffers.mean(0) if buffers.shape[1] else buffers[0])


class AveragedModel:
    """A model loaded with the clients' average, and the test set, on one device."""

    def __init__(self, cfg: Config, ds: Dataset, device, test: tuple[torch.Tensor, torch.Tensor]):
        self.batch_size = cfg.eval.batch_size
        self.device = device
        self.model = build.build_model(cfg, ds).to(device)
        self.test_x, self.test_y = test
        # uint8 test pixels (ds.norm) are normalised per evaluation batch, on this device
        self.table = pixel_table(ds.norm).to(device) if ds.norm is not None else None

    def evaluate(self, stacked: torch.Tensor, buffers: torch.Tensor, weights: Optional[torch.Tensor] = None) -> dict:
        """Test accuracy / loss of the average of `stacked`'s rows and their consensus distance."""
        params, bufs = average_rows(stacked, buffers, weights)
        load_params(self.model, params.to(self.device), bufs.to(self.device))
        acc, loss = evaluate_model(self.model, self.test_x, self.test_y, self.batch_size, self.table)
        return {"test_accuracy": acc, "test_loss": loss, "consensus_distance": consensus_distance(stacked)}
