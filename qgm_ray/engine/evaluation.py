"""The averaged model, the same for both engines: the mean of the clients' rows, evaluated on
the test set. LocalEngine holds one; on Ray the first ClientActor does (engine/actors.py).
With push-sum (directed graphs) the mean is weighted by the clients' push-sum weights: the
point push-sum conserves, sum_i w_i z_i / sum_i w_i."""
from __future__ import annotations

from typing import Optional

import torch

from qgm_ray import build
from qgm_ray.client import evaluate_model, load_params
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.base import consensus_distance
from qgm_ray.engine.push_sum import weighted_mean


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

    def evaluate(self, stacked: torch.Tensor, buffers: torch.Tensor, weights: Optional[torch.Tensor] = None) -> dict:
        """Test accuracy / loss of the average of `stacked`'s rows and their consensus distance."""
        params, bufs = average_rows(stacked, buffers, weights)
        load_params(self.model, params.to(self.device), bufs.to(self.device))
        acc, loss = evaluate_model(self.model, self.test_x, self.test_y, self.batch_size)
        return {"test_accuracy": acc, "test_loss": loss, "consensus_distance": consensus_distance(stacked)}
