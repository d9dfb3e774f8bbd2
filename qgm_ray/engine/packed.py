"""k clients of one architecture stepped together: one vmapped forward/backward per round.

Small models (cnn1d: 5k parameters, ~0.6 ms of CPU per step) spend most of a step in
Python and autograd bookkeeping, once per client. `PackedClients` stacks the clients'
flat parameter vectors into one (k, P) matrix and computes all k gradients with a single
`torch.func.vmap(grad_and_value(functional_call(model, ...)))`, so that bookkeeping is paid
once per k clients. Everything else stays per client and unchanged: each client's own
sampler and augmentation draw its batch, and `Algorithm.pre_mix` / `post_mix` run on the
client's row, so the numbers are those of the unpacked clients up to float summation order
(vmap turns k convolutions into one grouped convolution).

The clients keep working on their own: after packing, `client.params` / `client.grad` are
rows of the stacked matrices and the model's parameters (and BatchNorm buffers) are views of
those rows, so `Client.state_dict`, `load_state_dict`, `reset` and `evaluate` see the same
tensors. A ClientActor packs its k clients when `should_pack` says so (`ray.pack_clients`),
and the local engine packs the same blocks of k (so the engines stay bit-identical):

    packed = PackedClients(clients)          # after building the clients
    payloads = packed.pre_mix(lr)            # (k, payload_size), row i = client i's payload
    packed.post_mix(mixed, lr)               # mixed: (k, payload_size)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, vmap

from qgm_ray.data import augment_batch


def _rebind_views(tensors: list[torch.Tensor], row: torch.Tensor) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.data = row[offset:offset + n].view_as(t)
        offset += n


class PackedClients:
    def __init__(self, clients: list):
        if not clients:
            raise ValueError("PackedClients needs at least one client")
        self.clients = clients
        self.k = len(clients)
        self.model = clients[0].model  # the template: functional_call only reads its structure
        names = [n for n, _ in self.model.named_parameters()]
        shapes = [p.shape for p in self.model.parameters()]
        self._layout = []
        offset = 0
        for name, shape in zip(names, shapes):
            n = int(torch.Size(shape).numel())
            self._layout.append((name, offset, n, shape))
            offset += n
        for c in clients:
            if [p.shape for p in c.model.parameters()] != shapes:
                raise ValueError("PackedClients: every client must have the same architecture")

        # Parameters and gradients: rows of one matrix each; each client's tensors become views.
        self.params = torch.stack([c.params.detach() for c in clients])
        self.grad = torch.zeros_like(self.params)
        for i, c in enumerate(clients):
            ps = list(c.model.parameters())
            c.params = self.params[i]
            _rebind_views(ps, c.params)
            c.grad = self.grad[i]
            _rebind_views([p.grad for p in ps], c.grad)

        # Buffers (BatchNorm running stats, counters): stacked per name, clients hold row views,
        # so the vmapped forward's in-place running-stat updates land in each client's model.
        self.buffers = {}
        for name, _ in self.model.named_buffers():
            stacked = torch.stack([c.model.get_buffer(name).detach() for c in clients])
            self.buffers[name] = stacked
            mod_name, _, attr = name.rpartition(".")
            for i, c in enumerate(clients):
                mod = c.model.get_submodule(mod_name) if mod_name else c.model
                mod._buffers[attr] = stacked[i]

        def loss(params, buffers, xb, yb):
            return F.cross_entropy(functional_call(self.model, (params, buffers), (xb,)), yb)

        self._step = vmap(grad_and_value(loss), in_dims=(0, 0, 0, 0), randomness="different")

    def _param_views(self) -> dict:
        return {name: self.params[:, off:off + n].view(self.k, *shape) for name, off, n, shape in self._layout}

    def _batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for c in self.clients:
            idx = c.sampler.next().to(c.device)
            xb, yb = c.x[idx], c.y[idx]
            if c.augment:
                xb = augment_batch(xb, c.sampler.generator, kind=c.augment)
            xs.append(xb)
            ys.append(yb)
        return torch.stack(xs), torch.stack(ys)

    def pre_mix(self, lr: float) -> torch.Tensor:
        """Steps 1-2 of a round for all k clients; row i of the result is client i's payload."""
        xb, yb = self._batches()
        self.model.train()
        grads, losses = self._step(self._param_views(), self.buffers, xb, yb)
        for name, off, n, _ in self._layout:
            self.grad[:, off:off + n].copy_(grads[name].reshape(self.k, n))
        for c, loss in zip(self.clients, losses.tolist()):
            c.last_loss = loss
        return torch.stack([c.algorithm.pre_mix(c.state, c.params, c.grad, lr) for c in self.clients])

    def post_mix(self, mixed: torch.Tensor, lr: float) -> None:
        """Step 4 for all k clients; row i of `mixed` is what client i mixed from its neighbours."""
        for i, c in enumerate(self.clients):
            c.post_mix(mixed[i], lr)



# When `ray.pack_clients: auto` packs (bench: `python -m bench.levers --levers vmap`). Measured
# on CPU, 1 torch thread, cnn1d, one pre-mix of k clients, packed / separate: k=2 1.45x (slower),
# k=4 1.09x, k=8 0.78x, k=16 0.76x, k=32 0.71x. Above ~100k parameters a client's step is
# compute-bound and vmap's grouped convolutions lose to k separate ones on CPU (ResNet-20,
# 272k parameters: 0.40 s vs 0.25 s for 4 clients). Not measured on a GPU.
PACK_AUTO_MIN_CLIENTS = 8
PACK_AUTO_MAX_PARAMS = 100_000


def should_pack(mode, clients: list) -> bool:
    """`ray.pack_clients` (auto | True | False) for these clients: never fewer than 2; auto
    packs where it measured faster (see above)."""
    if len(clients) < 2 or mode is False:
        return False
    if mode is True:
        return True
    return len(clients) >= PACK_AUTO_MIN_CLIENTS and clients[0].num_params <= PACK_AUTO_MAX_PARAMS
