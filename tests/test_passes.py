"""Fewer elementwise passes per round: block_mix's slices and broadcasts, the rules' in-place
steps, the gradients' one buffer. Each form is checked bit for bit against the form it
replaces, kept here as an independent reference."""
from __future__ import annotations

import pytest
import torch

from qgm_ray.engine import base
from qgm_ray.engine.base import block_mix, wiring
from qgm_ray.topology import make_topology


def reference_block_mix(own, positions, rows, sources, received):
    """block_mix as one gather per in-neighbour slot over [own rows, received rows]: row i is
    sum_c w[i, c] * table[idx[i, c]], slots in increasing source order, padded with the row's
    own payload at weight 0."""
    table = own if not received else torch.cat([own] + [r.reshape(1, -1) for r in received])
    where = {p: i for i, p in enumerate(positions)}
    where.update({p: len(positions) + i for i, p in enumerate(sources)})
    d = max(len(src) for src, _ in rows)
    idx = torch.tensor([[where[j] for j in src] + [i] * (d - len(src)) for i, (src, _) in enumerate(rows)])
    w = torch.tensor([list(ws) + [0.0] * (d - len(ws)) for _, ws in rows], dtype=own.dtype)
    out = table[idx[:, 0]] * w[:, 0:1]
    for c in range(1, d):
        out.addcmul_(table[idx[:, c]], w[:, c:c + 1])
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


GRAPHS = [("ring", 12, {}), ("torus", 16, {}), ("ring_ext", 12, {}), ("expander", 17, {}),
          ("social", 32, {"graph": "davis_southern_women"}), ("graph", 14,
           {"generator": "gnp_random_graph", "generator_kwargs": {"p": 0.3, "seed": 3}}),
          ("time_varying_exponential", 16, {})]


def _split(n: int, cut: str) -> list[list[int]]:
    """Blocks whose received rows sit first, last or in the middle of their rows' sources."""
    if cut == "halves":
        return [list(range(0, n // 2)), list(range(n // 2, n))]
    if cut == "thirds":
        return [list(range(0, n // 3)), list(range(n // 3, 2 * n // 3)), list(range(2 * n // 3, n))]
    return [[p] for p in range(n)]   # one client a block: every neighbour is received


@pytest.mark.parametrize("slice_floats", [0, 10 ** 9], ids=["slices", "gathers"])
@pytest.mark.parametrize("cut", ["halves", "thirds", "singles"])
@pytest.mark.parametrize("name,n,kw", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_block_mix_equals_the_gather_form_bit_for_bit(monkeypatch, name, n, kw, cut, slice_floats):
    """Whether a slot reads slices and broadcast rows or gathers, each row sums the same products
    in the same order as one gather per slot: the same bits, on every block of every graph."""
    monkeypatch.setattr(base, "SLICE_FLOATS", slice_floats)
    gen = torch.Generator().manual_seed(n)
    payloads = torch.randn(n, 37, generator=gen)
    topo = make_topology(name, n, seed=1, **kw)
    for t in (0, 1):
        W = topo.sparse(t)
        for group in _split(n, cut):
            rows, sources = wiring(W, group)
            received = [payloads[j].clone() for j in sources]
            got = block_mix(payloads[group].clone(), group, rows, sources, received)
            want = reference_block_mix(payloads[group].clone(), group, rows, sources, received)
            assert torch.equal(_bits(got), _bits(want)), (name, cut, group)


def test_runs_read_slices_and_broadcasts():
    """A slot of consecutive own rows is one run read as a slice; rows reading one payload are
    one run read as a broadcast; a break starts a new run."""
    col = [(-1, 0), (-1, 0), (-1, 1), (-1, 2), (0, 0), (0, 0), (1, 0), (-1, 5), (-1, 5), (-1, 5), (-1, 7)]
    assert base._runs(col) == ((0, 2, -1, 0, 0), (2, 4, -1, 1, 1), (4, 6, 0, 0, 0), (6, 7, 1, 0, 0),
                               (7, 10, -1, 5, 0), (10, 11, -1, 7, 1))


def test_ring_block_reads_no_gather(monkeypatch):
    """A ring laid out in two blocks: every slot is at most three runs, so a block of large
    payloads mixes with slices only (no index_select of its rows)."""
    W = make_topology("ring", 64).sparse(0)
    rows, sources = wiring(W, list(range(32)))
    plan = base._mix_plan(tuple(range(32)), tuple(sources), tuple((tuple(s), tuple(w)) for s, w in rows),
                          torch.float32, "cpu")
    assert [len(runs) for runs in plan.runs] == [2, 2, 3]
    calls = []
    real = torch.Tensor.index_select
    monkeypatch.setattr(torch.Tensor, "index_select", lambda *a, **k: calls.append(1) or real(*a, **k))
    payloads = torch.randn(64, 3 * base.SLICE_FLOATS)
    got = block_mix(payloads[:32], list(range(32)), rows, sources, [payloads[j] for j in sources])
    assert not calls
    assert torch.equal(got, reference_block_mix(payloads[:32], list(range(32)), rows, sources,
                                                [payloads[j] for j in sources]))
