"""A block: k clients of one architecture, the unit of computation of both engines.

The block owns stacked tensors: parameters (k, P), every algorithm buffer (k, ...) with a
per-row step counter (k,), BatchNorm-style buffers stacked per name (k, ...), and the k
clients' training shards concatenated on the block's device. One round:

    payload = block.pre_mix(lr)       # (k, D): row i = client i's payload
    block.post_mix(mixed, lr)         # mixed: (k, D), row i = sum_j W[i, j] payload_j

The forward/backward is one `vmap(grad_and_value(functional_call(...)))` over the k rows
when the block is packed (or, per `compute.kernels`, the model's Linear / Conv1d layers as
batched matrix products over the rows: engine/kernels.py), else the rows one at a time (CPU:
vmap's grouped convolutions lose to separate ones for large models, see `should_pack`);
either way the algorithm runs once on the whole (k, P) block. Each client keeps its own
seeded, checkpointable `BatchSampler` (the same numbers as a lone client), so a client's
batches do not depend on which block it is in. Losses stay on the device (`block.losses`)
until an engine reads them.

On a directed graph (`push_sum=True`) each row also carries a push-sum weight, sent as one
extra payload column and de-biased after the mix (engine/push_sum.py).

A single client is a block of 1. Checkpoints stay per client (`client_state(i)`,
`load_client_state(i, s)`: engine/block_state.py), so `--resume`, replays and elastic resizes
work whatever the blocks were when the checkpoint was written; each client's own model is
evaluated by engine/block_eval.py.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from qgm_ray.data import apply_augment, draw_augment, pixel_table, to_float
from qgm_ray.sampler import BatchSampler
from qgm_ray.engine import block_eval, block_state
from qgm_ray.engine import push_sum as ps
from qgm_ray.engine.kernels import BatchedModel
from qgm_ray import contracts


class Block:
    def __init__(self, model: nn.Module, algorithm, shards: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 ids: Sequence[int], batch_size: int, seed: int, augment: Optional[str] = None,
                 device: str = "cpu", packed: bool = False, push_sum: bool = False,
                 norm: Optional[tuple] = None, fill: Optional[tuple] = None, kernels: str = "vmap"):
        if not ids or len(ids) != len(shards):
            raise ValueError("a block needs one shard per client and at least one client")
        self.ids = list(ids)
        self.k = len(self.ids)
        self.device = torch.device(device)
        self.algorithm = algorithm
        self.augment = augment
        # Crop padding in normalised units: Dataset.fill is black (-mean/std per channel), what the
        # official code's RandomCrop(32, padding=4) on the image before Normalize pads with.
        self.fill = 0.0 if fill is None else fill
        self.packed = packed
        self.seed = seed
        # Dropout draws from the process-global RNG. Seeding it from (seed, client, step) around
        # the forward makes those draws a function of the run alone, so Ray == local and replays
        # stay exact for models with dropout too (VGG, DistilBERT); models without skip it.
        self.stochastic = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())
        self.batch_size = batch_size
        # The template: functional_call reads only its structure; every client starts from its
        # weights (build_model seeds it, so all clients share the initial point).
        self.model = model.to(self.device).train()
        self.layout = []   # (name, offset, numel, shape) of each parameter in a row
        offset = 0
        for name, p in self.model.named_parameters():
            self.layout.append((name, offset, p.numel(), tuple(p.shape)))
            offset += p.numel()
        init = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        self.params = init.unsqueeze(0).repeat(self.k, 1).contiguous()
        self.buffers = {name: b.detach().unsqueeze(0).repeat(self.k, *([1] * b.dim())).contiguous()
                        for name, b in self.model.named_buffers()}
        self.state = block_state.fresh_state(self.algorithm, self.params)
        # Push-sum weights (directed graphs): every client starts at 1, so sum_i w_i = n.
        self.push_sum = bool(push_sum)
        self.weight = torch.ones(self.k, dtype=self.params.dtype, device=self.device) if self.push_sum else None
        # Per-client rows the exchange keeps between rounds ({name: (k, D)}; engine/choco.py's
        # public copies), checkpointed with each client; empty for plain gossip.
        self.exchange_state: dict = {}
        # All shards in one tensor on the device, so a round's k batches are one gather.
        self.x = torch.cat([x for x, _ in shards]).to(self.device)
        # uint8 shards (data.Dataset.norm): normalised per batch, after the gather
        self.table = pixel_table(norm).to(self.device) if norm is not None else None
        self.y = torch.cat([y for _, y in shards]).to(self.device)
        sizes = [len(x) for x, _ in shards]
        self.offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)
        self._batch_offsets = self.offsets.repeat_interleave(batch_size)   # a batch of every row
        self.samplers = [BatchSampler(n, batch_size, seed=seed * 1_000_003 + cid) for n, cid in zip(sizes, self.ids)]
        self.losses = torch.full((self.k,), float("nan"), device=self.device)
        self._vstep = vmap(grad_and_value(self._loss), in_dims=(0, 0, 0, 0), randomness="different")
        # A packed block's forward/backward: one vmap, or the model's layers as batched matrix
        # products over the rows (engine/kernels.py; kernels.choose decides from the config).
        self.kernels = kernels if packed else "vmap"
        self._batched = BatchedModel(self.model) if self.kernels == "batched" else None
        # Rows per vmapped forward/backward of a packed block (engine/memory.py sets it on a GPU
        # where the whole block's activations would not fit; compute.vmap_chunk overrides).
        self.chunk = self.k
        self.eval_model: Optional[nn.Module] = None   # CPU evaluation's model (engine/block_eval.py)
        self._rows: Optional[list] = None   # unpacked: per-row modules over views of the rows
        self.grad: Optional[torch.Tensor] = None

    @property
    def num_params(self) -> int:
        return self.params.shape[1]

    @property
    def payload_size(self) -> int:
        # build.payload_floats says the same for the Ray coordinator, which holds no block
        return self.algorithm.payload_size(self.num_params) + (1 if self.push_sum else 0)

    def _loss(self, params: dict, buffers: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(self.model, (params, buffers), (xb,)), yb)

    def param_views(self, params: torch.Tensor) -> dict:
        """{name: (..., *shape)}: views of (..., P) rows, one per parameter of the model."""
        return {name: params[..., off:off + n].view(*params.shape[:-1], *shape)
                for name, off, n, shape in self.layout}

    def _batches(self, rows: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of every row (or of these rows only: the other samplers do not move)."""
        if rows is None:
            rows, shift = range(self.k), self._batch_offsets
        else:
            shift = self.offsets[list(rows)].repeat_interleave(self.batch_size)
        samplers = [self.samplers[i] for i in rows]
        # Each shard's indices, then one add of each row's shard offset (not one per row).
        idx = torch.cat([s.next() for s in samplers]).add_(shift)
        idx = idx.to(self.device)
        k = len(samplers)
        xb = to_float(self.x[idx], self.table).view(k, self.batch_size, *self.x.shape[1:])
        yb = self.y[idx].view(k, self.batch_size)
        if self.augment:
            # Each client's own generator draws its crops and flips (the numbers of a lone
            # client), then one crop/flip program runs over the whole block's k*b samples.
            draws = [draw_augment(self.batch_size, s.generator, self.augment) for s in samplers]
            params = {key: torch.cat([d[key] for d in draws], dim=-1) for key in draws[0]}
            flat = xb.reshape(k * self.batch_size, *self.x.shape[1:])
            xb = apply_augment(flat, params, self.augment, fill=self.fill).view_as(xb)
        return xb, yb

    def gradients(self) -> torch.Tensor:
        """(k, P) gradients on each client's next batch; sets `self.losses` (k,)."""
        xb, yb = self._batches()
        if self.packed:
            # Rows in chunks of `chunk` (all k unless engine/memory.py found the whole block's
            # activations would not fit). Slices are views, so BatchNorm's running stats update
            # the block's buffers.
            out, losses = [], []
            for a in range(0, self.k, self.chunk):
                r = slice(a, min(a + self.chunk, self.k))
                with self._global_rng(self.ids[r], rows=range(r.start, r.stop)):
                    grads, loss = self._packed_step(self.params[r], {name: b[r] for name, b in self.buffers.items()},
                                                    xb[r], yb[r])
                out.append(self._flat(grads, r.stop - r.start))
                losses.append(loss.detach())
            self.losses = losses[0] if len(losses) == 1 else torch.cat(losses)
            return out[0] if len(out) == 1 else torch.cat(out)
        # Unpacked: each row's own module, whose parameters, gradients and buffers are views of
        # the block's rows (plain forward/backward: torch.func.functional_call's Python cost per
        # call is a large part of a tiny model's step on CPU).
        modules = self._row_modules()
        self.grad.zero_()
        losses = []
        for i, m in enumerate(modules):
            with self._global_rng([self.ids[i]], rows=[i]):
                loss = F.cross_entropy(m(xb[i]), yb[i])
            loss.backward()
            losses.append(loss.detach())
        self.losses = torch.stack(losses)
        return self.grad

    def row_gradients(self, rows: Sequence[int]) -> torch.Tensor:
        """(len(rows), P) gradients of these rows only, each on its next batch; sets their
        `losses`. The other rows' samplers, buffers and parameters do not move (an asynchronous
        run steps the rows whose events are due: engine/async_run.py). Unpacked, a row steps
        alone, so its numbers do not depend on the rows stepping with it; packed, the rows
        share one vmap (one per row for a model with dropout, whose draws a vmap shares)."""
        rows = list(rows)
        xb, yb = self._batches(rows)
        if self.packed:
            out, losses = [], []
            step = 1 if self.stochastic else self.chunk
            for a in range(0, len(rows), step):
                r = rows[a:a + step]
                # Gathered rows are copies: BatchNorm's running stats go back to the block after.
                bufs = {name: b[r] for name, b in self.buffers.items()}
                with self._global_rng([self.ids[i] for i in r], rows=r):
                    grads, loss = self._packed_step(self.params[r], bufs, xb[a:a + len(r)], yb[a:a + len(r)])
                for name, b in bufs.items():
                    self.buffers[name][r] = b
                out.append(self._flat(grads, len(r)))
                losses.append(loss.detach())
            self.losses[rows] = torch.cat(losses).to(self.losses.dtype)
            return torch.cat(out)
        modules = self._row_modules()
        losses = []
        for a, i in enumerate(rows):
            self.grad[i].zero_()
            with self._global_rng([self.ids[i]], rows=[i]):
                loss = F.cross_entropy(modules[i](xb[a]), yb[a])
            loss.backward()
            losses.append(loss.detach())
        self.losses[rows] = torch.stack(losses).to(self.losses.dtype)
        return self.grad[rows]

    def _packed_step(self, params: torch.Tensor, buffers: dict, xb: torch.Tensor,
                     yb: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """({name: (r, *shape)} gradients, (r,) losses) of r packed rows."""
        if self._batched is not None:   # no buffers: engine/kernels.py runs only such models
            return self._batched.gradients(self.param_views(params), xb, yb)
        return self._vstep(self.param_views(params), buffers, xb, yb)

    def _flat(self, grads: dict, rows: int) -> torch.Tensor:
        return torch.cat([grads[name].reshape(rows, n) for name, _, n, _ in self.layout], dim=1)

    def probe_step(self, rows: int) -> None:
        """One packed forward/backward of the first `rows` rows that changes nothing (cloned
        buffers, forked RNG, the first samples of the shards instead of a sampler draw): what
        engine/memory.py measures to choose `chunk`."""
        r = slice(0, rows)
        xb = to_float(self.x[:self.batch_size], self.table).unsqueeze(0).expand(rows, *([-1] * self.x.dim()))
        yb = self.y[:self.batch_size].unsqueeze(0).expand(rows, -1)
        with _seeded(0, [self.device] if self.device.type == "cuda" else []):
            self._packed_step(self.params[r], {n: b[r].clone() for n, b in self.buffers.items()}, xb.contiguous(),
                              yb.contiguous())

    def _global_rng(self, ids: Sequence[int], rows: Optional[Sequence[int]] = None):
        """The global RNG seeded from (seed, these clients, their step counts), restored after.
        A packed block draws once for all its rows (vmap), so its stream depends on the block's
        members: both engines build the same blocks (layout.py), so they still agree."""
        if not self.stochastic:
            return contextlib.nullcontext()
        steps = self.state["step"] if rows is None else self.state["step"][list(rows)]
        entropy = [self.seed, *ids, *[int(s) for s in steps.reshape(-1).tolist()]]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
        devices = [self.device] if self.device.type == "cuda" else []
        return _seeded(seed, devices)

    def _row_modules(self) -> list:
        if self._rows is None:
            import copy
            self.grad = torch.zeros_like(self.params)
            self._rows = []
            for i in range(self.k):
                m = copy.deepcopy(self.model).train()
                for (_, off, n, shape), p in zip(self.layout, m.parameters()):
                    p.data = self.params[i, off:off + n].view(shape)
                    p.grad = self.grad[i, off:off + n].view(shape)
                for name, stacked in self.buffers.items():
                    mod_name, _, attr = name.rpartition(".")
                    (m.get_submodule(mod_name) if mod_name else m)._buffers[attr] = stacked[i]
                self._rows.append(m)
        return self._rows

    def pre_mix(self, lr: float) -> torch.Tensor:
        """Steps 1-2 of a round for all k clients: (k, payload_size) payloads."""
        payload = self._payload(contracts.call_rule(self.algorithm, "pre_mix", self.state, self.params,
                                                    self.gradients(), lr))
        return ps.send(payload, self.params, self.weight) if self.push_sum else payload

    def post_mix(self, mixed: torch.Tensor, lr: float) -> None:
        """Step 4: row i of `mixed` is what client i mixed from its in-neighbours."""
        mixed = mixed.to(self.device)
        if self.push_sum:
            mixed, self.weight = ps.receive(mixed)
        # In place: the unpacked path's row modules are views of these rows.
        self.params.copy_(self._new_params(contracts.call_rule(self.algorithm, "post_mix", self.state,
                                                               self.params, mixed, lr)))

    def _payload(self, value) -> torch.Tensor:
        # The rule's own payload (before any push-sum column): a wrong shape or dtype would be
        # cast or broadcast silently by the mixing, or fail there far from the rule.
        return contracts.rule_result(self.algorithm, "pre_mix", value, self.k,
                                     self.algorithm.payload_size(self.num_params), self.params.dtype)

    def _new_params(self, value) -> torch.Tensor:
        # copy_ would broadcast a (P,) result into every row and cast integers silently.
        return contracts.rule_result(self.algorithm, "post_mix", value, self.k, self.num_params, self.params.dtype)

    def flat_buffers(self) -> torch.Tensor:
        """(k, B): each client's float buffers, flattened per row (engine/block_state.py)."""
        return block_state.flat_buffers(self)

    def evaluate_rows(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[float]:
        """Test accuracy of each client's own model, in row order (engine/block_eval.py)."""
        return block_eval.evaluate_rows(self, x, y, batch_size)

    def client_state(self, i: int, flat_buffers: Optional[torch.Tensor] = None) -> dict:
        """Client i's checkpoint, the format of a lone client (engine/block_state.py)."""
        return block_state.client_state(self, i, flat_buffers)

    def client_states(self) -> list[dict]:
        """Every client's checkpoint, in row order (engine/block_state.py)."""
        return block_state.client_states(self)

    def load_client_state(self, i: int, s: dict) -> None:
        """Row i becomes the client of checkpoint `s` (engine/block_state.py)."""
        block_state.load_client_state(self, i, s)

    def reset_rows(self, rows: Sequence[int], params: torch.Tensor, buffers: Optional[torch.Tensor] = None) -> None:
        """Elastic joiners start in these rows only (engine/block_state.py)."""
        block_state.reset_rows(self, rows, params, buffers)


@contextlib.contextmanager
def _seeded(seed: int, devices: list):
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# When a CPU block steps packed under `compute.pack_clients: auto` (bench: `python -m bench.levers
# --levers vmap`; the figures are in docs/results/bench). One vmapped call pays off on CPU only
# from about 8 clients of a small model; above ~100k parameters a client's step is
# compute-bound and vmap's grouped convolutions lose to k separate ones.
PACK_AUTO_MIN_CLIENTS = 8
PACK_AUTO_MAX_PARAMS = 100_000


def should_pack(mode, k: int, num_params: int, device) -> bool:
    """Whether a block of k clients steps with one vmap. On CUDA always (one program for k
    clients is what fills a GPU; docs/results/bench); on CPU per `compute.pack_clients`
    (auto | True | False): never for fewer than 2, auto where it is faster."""
    if str(device).startswith("cuda"):
        return True
    if k < 2 or mode is False:
        return False
    if mode is True:
        return True
    return k >= PACK_AUTO_MIN_CLIENTS and num_params <= PACK_AUTO_MAX_PARAMS
