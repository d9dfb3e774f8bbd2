"""Evaluation on the Ray engine, inside the ClientActors: each actor's clients' own models, and
the averaged model of every client.

The averaged model is evaluated inside the first ClientActor: a process that lives as long as
the run, has torch imported, the test set and (on a GPU) a CUDA context already. A Ray task
would land on a freshly started worker that imports torch again (and on a GPU pays a new CUDA
context); a separate evaluator actor would be one more torch process (docs/results/processes).
It reads the clients' parameters from the refs the ClientActors returned (`block_arrays`), so
neither the coordinator nor the driver handles a tensor; if its actor dies, the run recovers
as from any dead actor."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.arrays import as_tensor
from qgm_ray.engine.evaluation import AveragedModel, average_rows, local_test_set


def block_arrays(block) -> tuple:
    """(k x P params, k x B float buffers[, k push-sum weights on a directed graph]) of the
    block's clients, in row order: what an actor hands to the averaged model."""
    out = (block.params.detach().cpu().numpy(), block.flat_buffers().cpu().numpy())
    if block.push_sum:
        out += (block.weight.detach().cpu().numpy(),)
    return out


def _stack(per_actor: Sequence[tuple]) -> tuple:
    """(params, buffers, push-sum weights or None) of every client, in position order."""
    params = torch.cat([as_tensor(a[0]) for a in per_actor])
    buffers = torch.cat([as_tensor(a[1]) for a in per_actor])
    weights = torch.cat([as_tensor(a[2]) for a in per_actor]) if len(per_actor[0]) > 2 else None
    return params, buffers, weights


class Evaluator(AveragedModel):
    """The averaged model of a Ray run, fed from every actor's `block_arrays`."""

    def average(self, *per_actor: tuple) -> tuple[np.ndarray, np.ndarray]:
        """(params, buffers) of the clients' average: what elastic joiners start from."""
        p, b = average_rows(*_stack(per_actor))
        return p.numpy(), b.numpy()

    def evaluate_arrays(self, *per_actor: tuple) -> dict:
        return self.evaluate(*_stack(per_actor))


class ActorEvaluation:
    """One actor's evaluations, on the test set moved to its device once (on first use), and
    the averaged model built on the first evaluation of it (the first actor only)."""

    def __init__(self, cfg: Config, ds: Dataset, device: str):
        self.cfg, self.ds, self.device = cfg, ds, device
        self._test = None
        self._averaged: Optional[Evaluator] = None

    def local_accuracies(self, block, batch_size: int, n_clients: int) -> list[float]:
        """Test accuracy of each of the block's clients' own model, in row order."""
        x, y = local_test_set(*self._test_set(), n_clients, self.cfg.seed)
        return block.evaluate_rows(x, y, batch_size)

    def evaluate_average(self, per_actor: Sequence[tuple]) -> dict:
        """The averaged model of every client (`block_arrays` of every actor, in position
        order), and the process that evaluated it."""
        out = self._evaluator().evaluate_arrays(*per_actor)
        out["evaluator_pid"] = os.getpid()
        return out

    def average(self, per_actor: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(params, buffers) of the clients' average: what elastic joiners start from."""
        return self._evaluator().average(*per_actor)

    def _evaluator(self) -> Evaluator:
        if self._averaged is None:
            self._averaged = Evaluator(self.cfg, self.ds, self.device, self._test_set())
        return self._averaged

    def _test_set(self):
        if self._test is None:
            self._test = (self.ds.test_x.to(self.device), self.ds.test_y.to(self.device))
        return self._test
