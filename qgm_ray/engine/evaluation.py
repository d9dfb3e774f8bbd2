"""The averaged model, the same for both engines: the mean of the clients' rows, evaluated on
the test set. LocalEngine holds one; on Ray the first ClientActor does (engine/actors.py)."""
from __future__ import annotations

import torch

from qgm_ray import build
from qgm_ray.client import evaluate_model, load_params
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.base import consensus_distance


def average_rows(params: torch.Tensor, buffers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(params, float buffers) of the clients' average: the mean over the rows (n, P) / (n, B).
    Also what elastic joiners start from."""
    return params.mean(0), (buffers.mean(0) if buffers.shape[1] else buffers[0])


class AveragedModel:
    """A model loaded with the clients' average, and the test set, on one device."""

    def __init__(self, cfg: Config, ds: Dataset, device, test: tuple[torch.Tensor, torch.Tensor]):
        self.batch_size = cfg.eval.batch_size
        self.device = device
        self.model = build.build_model(cfg, ds).to(device)
        self.test_x, self.test_y = test

    def evaluate(self, stacked: torch.Tensor, buffers: torch.Tensor) -> dict:
        """Test accuracy / loss of the average of `stacked`'s rows and their consensus distance."""
        params, bufs = average_rows(stacked, buffers)
        load_params(self.model, params.to(self.device), bufs.to(self.device))
        acc, loss = evaluate_model(self.model, self.test_x, self.test_y, self.batch_size)
        return {"test_accuracy": acc, "test_loss": loss, "consensus_distance": consensus_distance(stacked)}
