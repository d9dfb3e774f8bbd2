"""In-process engine: the run's blocks (qgm_ray.layout) in one process; the exchange stage
(engine/exchange.py) mixes every block's payloads with the same sums each ClientActor does.

It is the reference the Ray engine is checked against and the fast path for tests and small
sweeps.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from qgm_ray import build, determinism, layout
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.assembly import build_block
from qgm_ray.engine.base import RoundRecord
from qgm_ray.engine.block import Block
from qgm_ray.engine.evaluation import AveragedModel, average_rows, local_test_set
from qgm_ray.engine import async_run, choco
from qgm_ray.engine.stage import exchange_stage
from qgm_ray.engine.host_heap import release_free_heap


LOSS_READS_EVERY = 16   # rounds of losses kept on the device before one read


class LocalEngine:
    def __init__(self, cfg: Config, ds: Dataset, parts: list, device: str = "cpu"):
        self.cfg, self.ds, self.parts, self.device = cfg, ds, parts, device
        # The intra-op threads of a ClientActor (compute.torch_threads, default 1). Another thread
        # count splits conv / matmul reductions differently: the engines would then agree to
        # ~1e-7 per round only and drift apart over a long run. For these small models extra
        # threads mostly spin anyway, and on a busy machine they are far slower
        # (docs/results/bench).
        torch.set_num_threads(cfg.compute.torch_threads)
        determinism.apply(cfg)
        cuda = torch.cuda.device_count() if str(device).startswith("cuda") else 0
        # The blocks a Ray run started on this machine would hold (qgm_ray.layout).
        self.layout = layout.plan(cfg, layout.machine_resources(cfg, device, cuda), device)
        self.k = self.layout.k
        self.n_clients = cfg.topology.n_clients
        # Elastic runs cut max_clients shards; slot i of `self.slots` says which shard client i holds.
        self.slots: list[int] = []
        self.blocks: list[Block] = []
        self._set_slots(list(range(self.n_clients)))
        self.test_x, self.test_y = ds.test_x.to(device), ds.test_y.to(device)
        self.averaged = AveragedModel(cfg, ds, device, (self.test_x, self.test_y))
        self.loss_reads_every = LOSS_READS_EVERY if str(device).startswith("cuda") else 1
        self.time_lost_seconds = 0.0   # nothing fails in one process

    @property
    def payload_bytes(self) -> int:
        return self.exchange.payload_bytes

    @property
    def centralized(self) -> bool:
        return self.exchange.centralized

    @property
    def params(self) -> torch.Tensor:
        """(n, P): every client's parameters in position order."""
        return torch.cat([b.params for b in self.blocks])

    def train(self, rounds: range, lr_of: Callable[[int], float],
              on_round: Optional[Callable[[RoundRecord], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> list[RoundRecord]:
        if self.asynchronous is not None:
            return self.asynchronous.train(rounds, lr_of, on_round, should_stop)
        records: list[RoundRecord] = []
        pending: list[tuple[int, torch.Tensor]] = []   # (round, every client's loss) not read yet
        exchange = self.exchange   # a chunk runs with one membership: resizes happen between chunks

        def read() -> None:
            # On a GPU one device read for up to LOSS_READS_EVERY rounds: a read per round is a
            # host sync that stops the CPU from queueing the next round's kernels. On CPU there is
            # nothing to overlap: read every round (per-round progress and bench timings).
            if not pending:
                return
            values = torch.stack([v for _, v in pending]).tolist()
            for (r, _), row in zip(pending, values):
                record = exchange.record(r, float(np.mean(row)))   # the loss in position order, as Ray's
                records.append(record)
                if on_round is not None:
                    on_round(record)
            pending.clear()

        for t in rounds:
            if should_stop is not None and should_stop():
                break
            lr = lr_of(t)
            payloads = [b.pre_mix(lr) for b in self.blocks]
            for b, m in zip(self.blocks, exchange.mix(t, payloads, self.blocks)):
                b.post_mix(m, lr)
            exchange.run_barriers(t, self.blocks, lr)
            pending.append((t, torch.cat([b.losses for b in self.blocks])))
            if len(pending) >= self.loss_reads_every:
                read()
        read()
        return records

    def flat_buffers(self) -> torch.Tensor:
        """(n, B): every client's float buffers in position order."""
        return torch.cat([b.flat_buffers() for b in self.blocks])

    def push_sum_weights(self) -> Optional[torch.Tensor]:
        """(n,) push-sum weights in position order on a directed graph, else None."""
        if not self.blocks[0].push_sum:
            return None
        return torch.cat([b.weight for b in self.blocks])

    def averaged_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        return average_rows(self.params, self.flat_buffers(), self.push_sum_weights())

    def evaluate(self) -> dict:
        release_free_heap()   # what the rounds keep for reuse (engine/host_heap.py)
        bs = self.cfg.eval.batch_size
        out = self.averaged.evaluate(self.params, self.flat_buffers(), self.push_sum_weights())
        if self.cfg.eval.local_models:
            x, y = local_test_set(self.test_x, self.test_y, self.n_clients, self.cfg.seed)
            accs = [a for b in self.blocks for a in b.evaluate_rows(x, y, bs)]
            out["local_test_accuracy"] = float(np.mean(accs))
        else:
            out["local_test_accuracy"] = float("nan")
        return out

    def client_states(self) -> list[dict]:
        return [s for b in self.blocks for s in b.client_states()]

    def state_dict(self) -> dict:
        release_free_heap()
        return {"slots": list(self.slots), "clients": self.client_states()}

    def load_state_dict(self, state: dict) -> None:
        if list(state["slots"]) != self.slots:
            self._set_slots(list(state["slots"]))
        self._load(state["clients"])

    def _load(self, states: list[dict]) -> None:
        i = 0
        for b in self.blocks:
            for r in range(b.k):
                b.load_client_state(r, states[i])
                i += 1

    def _set_slots(self, slots: list[int]) -> None:
        """Hold these shards at positions 0..len-1, in the layout's blocks. Clients that stay
        keep their state (a block is rebuilt from its clients' per-client states)."""
        kept = {s["id"]: s for s in self.client_states()} if self.blocks else {}
        groups = self.layout.groups(len(slots))
        old = {tuple(b.ids): b for b in self.blocks}
        blocks = []
        for g in groups:
            ids = [slots[i] for i in g]
            block = old.get(tuple(ids))
            if block is None:
                # One GPU holds every block: each gets its share (as each actor of a Ray run on
                # one GPU does), so both engines choose the same vmap chunks (engine/memory.py).
                block = build_block(self.cfg, self.ds, self.parts, ids, self.device, gpu_share=1 / len(groups),
                                    heap_for_big=True)
                for r, s in enumerate(ids):
                    if s in kept:
                        block.load_client_state(r, kept[s])
            blocks.append(block)
        self.blocks = blocks
        self.slots = list(slots)
        self.n_clients = len(slots)
        self.topology = build.build_topology(self.cfg, self.n_clients)
        self.exchange = exchange_stage(self.cfg, blocks[0].algorithm, self.topology, groups, blocks[0].payload_size,
                                       len(self.ds.train_x))
        # clock.mode=async: the schedule's events instead of rounds (engine/async_run.py)
        self.asynchronous = async_run.AsyncRun(blocks, self.exchange) if self.cfg.clock.mode == "async" else None

    def resize(self, n_clients: int, at_round: int) -> None:
        """Elastic: leavers release their shard; joiners take free shards, start from the
        current average model with fresh optimizer state."""
        if n_clients == self.n_clients:
            return
        avg, bufs = self.averaged_params()
        # Joiners adopt what each barrier keeps for the run (position 0 always stays).
        barriers = self.exchange.barriers
        kept = [x.joiner_state(self.blocks[0]) for x in barriers]
        if n_clients < self.n_clients:
            slots = self.slots[:n_clients]
        else:
            free = [s for s in range(len(self.parts)) if s not in self.slots]
            slots = self.slots + free[:n_clients - self.n_clients]
        old = set(self.slots)
        self._set_slots(slots)
        choco.reset(self.blocks)   # W changed: every public copy restarts at zero (engine/choco.py)
        for b in self.blocks:
            joiners = [r for r, s in enumerate(b.ids) if s not in old]
            b.reset_rows(joiners, avg, bufs)
            for x, state in zip(barriers, kept):
                x.adopt(b, joiners, state)

    def close(self) -> None:
        pass
