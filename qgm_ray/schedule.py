"""Learning-rate schedule and the round/epoch bookkeeping shared by every engine.

One round = every client takes one local mini-batch step and one gossip exchange.
One epoch = as many rounds as it takes the whole federation to see the training set once:
ceil(N_train / (n_clients * batch_size)), as in the official code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from qgm_ray.config import Config


def rounds_per_epoch(n_train: int, n_clients: int, batch_size: int) -> int:
    return max(1, math.ceil(n_train / (n_clients * batch_size)))


@dataclass(frozen=True)
class LRSchedule:
    """lr(round): base lr, optional scale-up, linear warm-up, multistep decay.

    The official recipe: lr 0.1 per 64 samples (reference_batch=64) scaled up by n
    (lr_scaleup=linear), 5 warm-up epochs from the unscaled lr, decay 0.1 at 50% and 75%.
    """

    base_lr: float           # lr after batch-ratio correction, before scale-up
    peak_lr: float           # lr after scale-up: what warm-up reaches
    warmup_rounds: int
    total_rounds: int
    milestone_rounds: tuple
    decay: float

    @classmethod
    def from_config(cls, cfg: Config, rounds_per_epoch: int) -> "LRSchedule":
        s = cfg.schedule
        base = cfg.algorithm.lr
        if s.reference_batch > 0:
            base *= cfg.data.batch_size / s.reference_batch
        factor = {"none": 1.0, "linear": float(cfg.topology.n_clients), "factor": s.scaleup_factor}[s.lr_scaleup]
        total = max(1, round(s.epochs * rounds_per_epoch))
        return cls(
            base_lr=base,
            peak_lr=base * factor,
            warmup_rounds=round(s.warmup_epochs * rounds_per_epoch),
            total_rounds=total,
            milestone_rounds=tuple(sorted(round(m * total) for m in s.milestones)),
            decay=s.decay,
        )

    def __call__(self, t: int) -> float:
        if t < self.warmup_rounds:
            # With a scale-up, warm up from the unscaled lr (Goyal et al.); without one, from ~0.
            start = self.base_lr if self.peak_lr != self.base_lr else self.peak_lr / self.warmup_rounds
            return start + (self.peak_lr - start) * t / self.warmup_rounds
        n_decays = sum(t >= m for m in self.milestone_rounds)
        return self.peak_lr * self.decay ** n_decays
