"""What every engine offers the runner, and the math both engines share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from qgm_ray.sparse_w import SparseW, as_sparse


class EngineFailure(RuntimeError):
    """Part of the engine died (a Ray actor, a node). The engine has already replaced what died
    (`on_failure: replay`) or removed it (`drop`); its state is undefined until the runner
    restores a checkpoint with `load_state_dict`, then the runner replays from that round."""

    def __init__(self, message: str, lost_clients: Sequence[int] = ()):
        super().__init__(message)
        self.lost_clients = list(lost_clients)


@dataclass(frozen=True)
class RoundRecord:
    """What one finished round reports to the runner. The engine's exchange stage counts the
    bytes, once: the runner only adds them up."""
    round: int                  # the round's index t (0-based)
    loss: float                 # mean mini-batch loss over the clients, in position order
    bytes_sent: int             # payload bytes put on the wire in this round (gossip and any barrier step)
    bytes_cross_node: int = 0   # of which crossed Ray nodes (0 on the local engine)


class Engine(Protocol):
    """Everything the runner reads of an engine; both engines implement all of it
    (engine/local.py LocalEngine, engine/ray_engine.py RayEngine; tests/test_exchange.py
    checks both against this list). A round's exchange (mixing, wire format, bytes, barriers)
    is engine/exchange.py's; what the runner sees of it is the RoundRecord."""
    n_clients: int              # clients now (elastic resizes, dropped clients change it)
    topology: object            # the graph of those n_clients (qgm_ray.topology): the run's log line
    time_lost_seconds: float    # wall time lost to failures and replays (0.0 where nothing fails)
    exchange: object            # the exchange stage of those n_clients (engine/exchange.py): the run's clock reads it

    def train(self, rounds: range, lr_of: Callable[[int], float],
              on_round: Optional[Callable[[RoundRecord], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> list[RoundRecord]:
        """Run these rounds; return one record per finished round (len == len(rounds)).

        When `should_stop()` turns true the engine stops at the next round boundary where every
        client has finished its round, and returns the records of the rounds done so far (fewer
        than len(rounds)): the state is then exactly that after round rounds[0] + len(result).
        Raises EngineFailure when part of the engine died (the runner restores and replays)."""

    def evaluate(self) -> dict:
        """test_accuracy (averaged model), local_test_accuracy, consensus_distance, test_loss."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def resize(self, n_clients: int, at_round: int) -> None: ...

    def close(self) -> None: ...


def averages_everyone(topology, centralized: bool) -> bool:
    """Every client mixes the plain mean of all payloads: an all-reduce rule (centralized_sgdm),
    or the complete graph (W = 1/n, unless `lazy` made it (I + W)/2). Both engines then take
    the exact O(n P) all-reduce of engine/allreduce.py instead of n weighted sums of n rows."""
    if centralized:
        return True
    return getattr(topology, "name", None) == "complete" and not getattr(topology, "options", {}).get("lazy")


def mixing_matrix(topology, centralized: bool, n: int, t: int) -> SparseW:
    """W(t) by its nonzeros; all-reduce algorithms (centralized_sgdm) average over everyone
    whatever the graph (W = 1/n: n^2 nonzeros, so the engines never ask for it: they take
    engine/allreduce.py for every round where `averages_everyone`)."""
    if centralized:
        return SparseW.from_dense(np.full((n, n), 1.0 / n))
    return topology.sparse(t)


def wiring(W, group: Sequence[int]) -> tuple[list, list[int]]:
    """For the clients at positions `group` (a block): rows [(sources, weights)] of W, and the
    positions held by other blocks that the block must receive, in increasing order.
    Sources are in increasing index order: both engines sum in this order (block_mix), so they
    agree bit for bit. W: a SparseW (or a dense array).
    Memoised on the matrix: a static graph's blocks are wired once per run."""
    sp, key = as_sparse(W), ("wiring", tuple(group))
    if key not in sp.memo:
        rows, need = [], set()
        for i in group:
            src, weights = sp.row(i)
            src = src.tolist()
            rows.append((src, weights.tolist()))
            need.update(src)
        sp.memo[key] = (rows, sorted(need - set(group)))
    return sp.memo[key]


def exports(W, group: Sequence[int]) -> list[int]:
    """Positions of `group` whose payload a client outside the group mixes in W: the only rows
    a block has to put in the object store (one GPU holding every client exports none)."""
    sp, key = as_sparse(W), ("exports", tuple(group))
    if key not in sp.memo:
        inside = np.zeros(sp.n, dtype=bool)
        inside[list(group)] = True
        sp.memo[key] = [p for p in group if not inside[sp.col(p)].all()]
    return sp.memo[key]


def block_mix(own: torch.Tensor, positions: Sequence[int], rows: Sequence[tuple], sources: Sequence[int],
              received: Sequence[torch.Tensor]) -> torch.Tensor:
    """Step 3 of a round for a whole block: row i of the result = sum_j w_ij * payload_j over
    row i's sources (`rows[i]` = (positions, weights), from `wiring`), where a payload is a
    row of `own` (the block's own payloads, rows at `positions`) or one of `received` (the
    payloads of `sources`, in that order).

    One multiply-add per in-neighbour slot over the whole block (d ops for in-degree d,
    padded with zero weights), not one Python loop per client. A slot reads, for each row, a
    row of `own` or a received payload; where consecutive rows read consecutive rows of
    `own` (a ring, a torus, an exponential graph laid out in blocks: mostly shifts) or the same
    payload, the slot reads them as a slice or a broadcast view, so nothing is copied; a slot
    whose rows scatter over many runs gathers them into one (k, D) tensor. Either way each
    output row is the same multiply-add of the same values: each row's sum runs over its
    sources in increasing order whatever form a slot takes. Both engines call this with the
    same inputs in the same order and shapes (the layout gives them the same blocks), so they
    agree bit for bit. Not a BLAS `W @ P`: a matmul is free to reorder and block its sums.
    """
    plan = _mix_plan(tuple(positions), tuple(sources), tuple((tuple(s), tuple(w)) for s, w in rows),
                     own.dtype, own.device)
    received = [r.reshape(1, -1).to(own.device) for r in received]
    out = torch.empty_like(own)
    k, width = own.shape
    for c, runs in enumerate(plan.runs):
        w = plan.weights[:, c:c + 1]
        if len(runs) * SLICE_FLOATS > k * width:
            # Many short runs: one gather of the slot's rows (own rows by index, then the
            # received payloads written over their rows) costs less than a call per run.
            parts = [(0, k, own.index_select(0, plan.gather[c][0]))]
            for row, j in plan.gather[c][1]:
                parts[0][2][row] = received[j][0]
        else:
            parts = [(a, b, own[start:start + b - a] if src < 0 and step else
                      (own[start:start + 1] if src < 0 else received[src]).expand(b - a, width))
                     for a, b, src, start, step in runs]
        for a, b, values in parts:
            if c == 0:
                torch.mul(values, w[a:b], out=out[a:b])
            else:
                out[a:b].addcmul_(values, w[a:b])
    return out


# A call per run costs about what gathering this many floats does (on CPU, one thread): a
# slot with more than one run per this many of the block's payload floats gathers instead.
SLICE_FLOATS = 1 << 16


@dataclass(frozen=True)
class _Plan:
    """How block_mix reads each in-neighbour slot c (the c-th source of every row, zero-padded
    to the largest in-degree d with the row's own payload at weight 0)."""
    weights: torch.Tensor   # (k, d)
    # per slot: runs (a, b, src, start, step): rows a..b-1 read own rows start.. (src = -1;
    # step 1: consecutive rows, step 0: row `start` for every row) or received payload src
    runs: tuple
    # per slot: (k,) own row per row (its own where it reads a received payload), and the
    # (row, received index) pairs to write over the gathered rows
    gather: tuple


_PLANS: dict = {}


def _mix_plan(positions: tuple, sources: tuple, rows: tuple, dtype, device) -> _Plan:
    """Block_mix's plan of a block's rows of W. Cached: a static graph asks for the same plan
    every round."""
    key = (positions, sources, rows, dtype, str(device))
    plan = _PLANS.get(key)
    if plan is None:
        where = {p: (-1, i) for i, p in enumerate(positions)}
        where.update({p: (j, 0) for j, p in enumerate(sources)})
        d = max(len(src) for src, _ in rows)
        # (src, row) of each row's c-th source; a padded slot reads the row's own payload
        slots = [[where[src[c]] if c < len(src) else (-1, i) for i, (src, _) in enumerate(rows)] for c in range(d)]
        w = [list(ws) + [0.0] * (d - len(ws)) for _, ws in rows]
        plan = _Plan(weights=torch.tensor(w, dtype=dtype).to(device),
                     runs=tuple(_runs(col) for col in slots),
                     gather=tuple((torch.tensor([r if s < 0 else i for i, (s, r) in enumerate(col)],
                                                dtype=torch.long).to(device),
                                   tuple((i, s) for i, (s, _) in enumerate(col) if s >= 0)) for col in slots))
        if len(_PLANS) >= 256:   # time-varying graphs: many plans, each used once in a while
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _runs(col: list) -> tuple:
    """Maximal runs (a, b, src, start, step) of consecutive rows whose reads are one slice
    (own rows start, start+1, ...: step 1) or one row repeated (step 0)."""
    runs: list = []
    for i, (src, r) in enumerate(col):
        if runs:
            a, b, s, start, step = runs[-1]
            if s == src and b == i:
                if b - a == 1 and src < 0 and r == start + 1:
                    runs[-1] = (a, i + 1, s, start, 1)
                    continue
                if (step == 0 or b - a == 1) and r == start:
                    runs[-1] = (a, i + 1, s, start, 0)
                    continue
                if step == 1 and b - a > 1 and r == start + (i - a):
                    runs[-1] = (a, i + 1, s, start, 1)
                    continue
        runs.append((i, i + 1, src, r, 1 if src < 0 else 0))
    return tuple(runs)


def round_bytes(topology, centralized: bool, n: int, t: int, payload_bytes: int) -> int:
    """Bytes put on the wire in round t, counted per client whatever the blocks (so the number
    does not depend on the machine's layout): on a graph, each payload goes to each
    out-neighbour. An all-reduce (`averages_everyone`) sends each client's payload up a tree
    once and the mean down once: 2 (n - 1) payloads (what engine/allreduce.py does: rows summed
    inside their block, one partial per block to the root, the mean back)."""
    if averages_everyone(topology, centralized):
        return int(2 * (n - 1) * payload_bytes)
    return gossip_bytes(topology.sparse(t), payload_bytes)


def gossip_bytes(W: SparseW, payload_bytes: int) -> int:
    """Bytes of one gossip round over W: each payload to each out-neighbour (W's off-diagonal
    nonzeros, counted once per matrix)."""
    if "edges" not in W.memo:
        W.memo["edges"] = W.off_diagonal_nnz()
    return int(W.memo["edges"] * payload_bytes)


def consensus_distance(stacked: torch.Tensor) -> float:
    """mean_i ||x_i - xbar||^2 over the rows of `stacked` (float64 for a stable small number)."""
    x = stacked.double()
    return float(((x - x.mean(0, keepdim=True)) ** 2).sum(1).mean())


def groups_of(n: int, k: int) -> list[list[int]]:
    """Topology positions held by each block (one per ClientActor): consecutive runs of k.
    Both engines use the same blocks (qgm_ray.layout), so both compute the same numbers."""
    return [list(range(a, min(a + k, n))) for a in range(0, n, k)]
