"""A client's batch sampler: a seeded stream of mini-batch indices into the client's shard
that a checkpoint can stop and resume. Each client slot owns one, so its batches do not depend
on the block it is stepped in (engine/block.py)."""
from __future__ import annotations

import torch


class BatchSampler:
    """Reshuffles the client's indices every local epoch; owns its RNG so it can be checkpointed."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"rng": self.generator.get_state(), "order": self.order.clone(), "pos": torch.tensor(self.pos)}

    def load_state_dict(self, s: dict) -> None:
        self.generator.set_state(s["rng"])
        self.order = s["order"].clone()
        self.pos = int(s["pos"])
