"""CHOCO-Gossip: the exchange of a compressed run (Koloskova, Stich & Jaggi, ICML 2019).

Each client i keeps a public copy x_hat_i of what it has sent and s_i = sum_j W_ij x_hat_j,
the weighted sum of its in-neighbours' public copies (its own included). Round t:

    q_i = Q(payload_i - x_hat_i)            # the compressor, keyed by (seed, slot i, t)
    x_hat_i += q_i;  s_i += sum_j W_ij q_j   # every receiver applies the same q_j
    post_mix receives payload_i + consensus_lr * (s_i - x_hat_i)

so the rule's pre_mix / post_mix stay as they are, and every rule whose payload is mixed by
W gets compression (its whole payload: the model, model and tracker, ...). Only q crosses
clients, in the compressor's wire format; `s += sum_j W_ij q_j` is the plain mixing of the
q's (engine.base.block_mix), so both engines sum in the same order and agree bit for bit.

Where x_hat starts: at zero, for every client. A payload means what its rule says (a model,
a model and a tracker, Adam's update, ...), so the common initial model is a valid start for
some rules and not for others; zero is valid for every rule, and W times zero is zero, so
s_i = sum_j W_ij x_hat_j holds from round 0 without anything sent. The first rounds then
send the payload itself, compressed.

Where W changes (an elastic resize, clients dropped after a failure), s would still sum the
old neighbours: every client's x_hat and s restart at zero, the same start as round 0, so
nothing extra travels (`reset`). A time-varying graph changes W every round and is refused
before the run starts (config.CHOCO_NEEDS), as are directed graphs (push-sum mixes a weight
column no public copy tracks) and all-reduce rules; the complete graph gossips over W here
(n - 1 compressed payloads per client) instead of the all-reduce.

The state x_hat, s (k, D) lives with the block, per client row (`Block.exchange_state`), and
goes into each client's checkpoint, so --resume and replays after a lost actor carry it.

The numerics are two pure functions over a block's (k, D) rows (`compress_step`,
`consensus_step`); `Choco` holds a run's settings (compressor per round, its wire, the
keys); `ChocoExchange` is the exchange stage the local engine mixes with and the Ray
coordinator counts bytes with.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from qgm_ray.engine.base import block_mix
from qgm_ray.engine.exchange import Exchange
from qgm_ray.engine.wire import Wire
from qgm_ray.schedule import rounds_per_epoch

STATE_KEYS = ("xhat", "s")


# ------------------------------------------------------------------ the numerics
def compress_step(payload: torch.Tensor, xhat: torch.Tensor, compress) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, diff): diff = payload - x_hat, q = compress(diff) (dense, same shape); x_hat += q in place."""
    diff = payload - xhat
    q = compress(diff)
    xhat.add_(q)
    return q, diff


def consensus_step(payload: torch.Tensor, xhat: torch.Tensor, s: torch.Tensor, mixed_q: torch.Tensor,
                   consensus_lr: float) -> torch.Tensor:
    """s += sum_j W_ij q_j (`mixed_q`, in place); what post_mix receives: payload + gamma (s - x_hat)."""
    s.add_(mixed_q)
    return payload + consensus_lr * (s - xhat)


def keep_at(epoch: float, keep: float, warmup_epochs: float, warmup_keep: Sequence[float]) -> float:
    """The official warm-up schedule (compress_warmup_values / _epochs) in keep terms: the values
    >= keep (a denser message than the target), each for an equal share of warmup_epochs, in
    their order; then keep."""
    values = [float(v) for v in warmup_keep if v >= keep]
    if epoch < warmup_epochs:
        for i, value in enumerate(values):
            if epoch < (i + 1) / len(values) * warmup_epochs:
                return value
    return keep


# ------------------------------------------------------------------ a run's settings
class ChocoWire(Wire):
    """A compressed payload on the wire: the compressor's bytes (values and indices, packed
    levels, packed bits), one uint8 array per payload row."""
    name = "compressed"

    def __init__(self, compressor):
        self.compressor = compressor

    def nbytes(self, payload_floats: int) -> int:
        return int(self.compressor.wire_bytes(int(payload_floats)))

    def encode_keyed(self, rows: torch.Tensor, keys: torch.Tensor) -> list[np.ndarray]:
        """(r, D) uncompressed rows (payload - x_hat) -> r uint8 arrays of nbytes(D) each. On
        the rows' own device, where `compress` computes the same q for the sender's own rows."""
        wire = self.compressor.encode(rows.detach(), keys)
        return [np.ascontiguousarray(row) for row in wire]

    def decode_keyed(self, arrays: Sequence[np.ndarray], keys, d: int) -> list[torch.Tensor]:
        """Received wire rows -> the dense q rows they encode."""
        if not arrays:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # read-only object-store arrays, only read
            q = self.compressor.decode(np.stack(arrays), keys, int(d))
        return list(q)


class Choco:
    """A run's compressed exchange: the compressor of each round (the keep warm-up), its wire,
    each client's keys and consensus_lr. Plain settings (pickles to every actor); both engines
    call the same methods on the same rows."""

    def __init__(self, op: str, options: dict, consensus_lr: float, seed: int, rounds_per_epoch: int,
                 warmup_epochs: float = 0.0, warmup_keep: Sequence[float] = ()):
        self.op, self.options = op, dict(options)
        self.consensus_lr = float(consensus_lr)
        self.seed = int(seed)
        self.rounds_per_epoch = max(1, int(rounds_per_epoch))
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_keep = tuple(float(v) for v in warmup_keep)

    @classmethod
    def of(cls, cfg, n_train: int) -> Optional["Choco"]:
        """The run's Choco, or None for an uncompressed run (compression.op: none)."""
        c = cfg.compression
        if c.op == "none":
            return None
        return cls(c.op, c.options(), c.consensus_lr, cfg.seed,
                   rounds_per_epoch(n_train, cfg.topology.n_clients, cfg.data.batch_size),
                   c.warmup_epochs, c.warmup_keep)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}   # not the built compressors

    def keep(self, t: int) -> Optional[float]:
        """keep in round t (the warm-up's, then compression.keep); None: the op reads no keep."""
        keep = self.options.get("keep")
        if keep is None or self.warmup_epochs <= 0:
            return keep
        return keep_at(t / self.rounds_per_epoch, float(keep), self.warmup_epochs, self.warmup_keep)

    def compressor(self, t: int):
        keep = self.keep(t)
        options = dict(self.options)
        if keep is not None:
            options["keep"] = keep
        return self._make(tuple(sorted(options.items())))

    def _make(self, options: tuple):
        cache = self.__dict__.setdefault("_compressors", {})
        if options not in cache:
            from qgm_ray.compression import make_compressor
            cache[options] = make_compressor(self.op, **dict(options))
        return cache[options]

    def wire(self, t: int) -> ChocoWire:
        return ChocoWire(self.compressor(t))

    def keys(self, slots: Sequence[int], t: int):
        from qgm_ray.compression import stream_keys
        return stream_keys(self.seed, list(slots), int(t))

    # ------------------------------------------------------------ per block
    @staticmethod
    def fresh_state(k: int, d: int, dtype, device) -> dict:
        """x_hat and s of k clients at their start: zero (see the module's docstring)."""
        return {key: torch.zeros(k, d, dtype=dtype, device=device) for key in STATE_KEYS}

    def send(self, state: dict, payload: torch.Tensor, slots: Sequence[int], t: int,
             export: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Round t's compression of a block's (k, D) payload: q (k, D), x_hat updated; and the
        wire arrays of the rows `export` (row indices) that other processes read."""
        keys = self.keys(slots, t)
        comp = self.compressor(t)
        q, diff = compress_step(payload, state["xhat"], lambda rows: _dense(comp.compress(rows, keys), rows))
        if not export:
            return q, []
        rows = list(export)
        return q, self.wire(t).encode_keyed(diff[rows], keys[rows])

    def decode(self, arrays: Sequence[np.ndarray], slots: Sequence[int], t: int, d: int) -> list[torch.Tensor]:
        """The q rows of round t sent by the clients at these slots."""
        return self.wire(t).decode_keyed(arrays, self.keys(slots, t), d)

    def receive(self, state: dict, payload: torch.Tensor, q: torch.Tensor, positions: Sequence[int], rows,
                sources: Sequence[int], received: Sequence[torch.Tensor]) -> torch.Tensor:
        """s += sum_j W_ij q_j with block_mix (the plain mixing's sums, in the same order); what
        post_mix receives."""
        mixed_q = block_mix(q, positions, rows, sources, received)
        return consensus_step(payload, state["xhat"], state["s"], mixed_q, self.consensus_lr)


def _dense(q: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return q.to(device=like.device, dtype=like.dtype)


def reset(blocks: Sequence) -> None:
    """Every client's x_hat and s back to zero: W changed (a resize, dropped clients)."""
    for b in blocks:
        for v in b.exchange_state.values():
            v.zero_()


# ------------------------------------------------------------------ the exchange stage
class ChocoExchange(Exchange):
    """The exchange of a compressed run: the same wiring and exports as plain gossip over W
    (the complete graph too: no all-reduce), q's in the round's compressed wire format, bytes
    counted at the compressor's wire size. `mix` needs the blocks (their exchange_state)."""

    def __init__(self, topology, centralized: bool, groups, payload_floats: int, barriers=(), *, choco: Choco):
        self.choco = choco
        super().__init__(topology, centralized, groups, payload_floats, barriers, choco.wire(0))
        self.all_reduce = False

    def payload_bytes_at(self, t: int) -> int:
        return self.choco.wire(t).nbytes(self.payload_floats)

    def mix(self, t: int, payloads: Sequence[torch.Tensor], blocks: Sequence = ()) -> list[torch.Tensor]:
        qs = [self.choco.send(b.exchange_state, p, b.ids, t)[0] for b, p in zip(blocks, payloads)]
        mixed = []
        for b, (block, payload, q) in enumerate(zip(blocks, payloads, qs)):
            rows, sources = self.wiring(t, b)
            received = [qs[self._where[j][0]][self._where[j][1]] for j in sources]
            mixed.append(self.choco.receive(block.exchange_state, payload, q, self.groups[b], rows, sources,
                                            received))
        return mixed


def exchange_for(choco: Optional[Choco], topology, centralized: bool, groups, payload_floats: int, barriers,
                 wire) -> Exchange:
    """The run's exchange stage: CHOCO's where the run compresses, else the plain one."""
    if choco is None:
        return Exchange(topology, centralized, groups, payload_floats, barriers, wire)
    return ChocoExchange(topology, centralized, groups, payload_floats, barriers, choco=choco)
