"""What every engine offers the runner, and the math both engines share."""
from __future__ import annotations

from typing import Callable, Optional, Protocol

import numpy as np
import torch


class Engine(Protocol):
    n_clients: int
    topology: object

    def train(self, rounds: range, lr_of: Callable[[int], float],
              on_round: Optional[Callable[[int, float], None]] = None) -> list[float]:
        """Run these rounds; return the mean mini-batch loss of each round (len == len(rounds))."""

    def evaluate(self) -> dict:
        """test_accuracy (averaged model), local_test_accuracy, consensus_distance, test_loss."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def resize(self, n_clients: int, at_round: int) -> None: ...

    def close(self) -> None: ...


def mixing_matrix(topology, centralized: bool, n: int, t: int) -> np.ndarray:
    """W(t); all-reduce algorithms (centralized_sgdm) average over everyone whatever the graph."""
    if centralized:
        return np.full((n, n), 1.0 / n)
    return topology.matrix(t)


def round_bytes(topology, centralized: bool, n: int, t: int, payload_bytes: int) -> int:
    """Bytes put on the wire in round t: each payload goes to each out-neighbour.
    All-reduce is counted as a ring all-reduce, 2 (n-1)/n payloads per client."""
    if centralized:
        return int(round(2 * (n - 1) * payload_bytes))
    return int(sum(topology.out_degree(i, t) for i in range(n)) * payload_bytes)


def consensus_distance(stacked: torch.Tensor) -> float:
    """mean_i ||x_i - xbar||^2 over the rows of `stacked` (float64 for a stable small number)."""
    x = stacked.double()
    return float(((x - x.mean(0, keepdim=True)) ** 2).sum(1).mean())
