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
    payloads = torch.randn(64, base.SLICE_FLOATS // 8)   # 32 rows: 4 x SLICE_FLOATS floats a slot
    got = block_mix(payloads[:32], list(range(32)), rows, sources, [payloads[j] for j in sources])
    assert not calls
    assert torch.equal(got, reference_block_mix(payloads[:32], list(range(32)), rows, sources,
                                                [payloads[j] for j in sources]))


# ------------------------------------------------------------------ the rules' steps

def _ref_direction(m, g, beta, nesterov):
    m.mul_(beta).add_(g)
    return g.add(m, alpha=beta) if nesterov else m


def _ref_rule_round(name, x, grad, state, mixed_of, lr, hp):
    """A round of `name` as each step computed with a new tensor: (payload, x+, state)."""
    wd, beta, mu = hp["weight_decay"], hp.get("momentum", 0.0), hp.get("qgm_beta", 0.0)
    nesterov = name.endswith("_n")
    m = state.get("momentum_buffer")
    if name.startswith("centralized"):
        payload = grad.clone()
        gbar = mixed_of(payload).add(x, alpha=wd)
        return payload, x.add(_ref_direction(m, gbar, beta, nesterov), alpha=-lr)
    g = grad.add(x, alpha=wd)
    if name == "dsgd":
        payload = x.add(g, alpha=-lr)
    elif name.startswith("qg"):
        payload = x.add(_ref_direction(m.clone(), g, beta, nesterov), alpha=-lr)
    else:
        payload = x.add(_ref_direction(m, g, beta, nesterov), alpha=-lr)
    x_new = mixed_of(payload).clone()
    if name.startswith("qg"):
        m.mul_(mu).add_(x.sub(x_new), alpha=(1.0 - mu) / lr)
    return payload, x_new


@pytest.mark.parametrize("name", ["dsgd", "dsgdm", "dsgdm_n", "qg_dsgdm", "qg_dsgdm_n", "centralized_sgdm",
                                  "centralized_sgdm_n"])
def test_sgd_rules_write_over_their_temporaries_with_the_same_bits(name):
    """The rules' steps written over their own temporaries give the bits of the steps that
    make a new tensor each, on a block's (k, P) rows, over rounds with a changing lr; the
    caller's x, grad and mixed stay as they were."""
    from qgm_ray.algorithms import make_algorithm
    hp = {"weight_decay": 1e-3}
    if name != "dsgd":
        hp["momentum"] = 0.85
    if name.startswith("qg"):
        hp["qgm_beta"] = 0.7
    algo = make_algorithm(name, **hp)
    _rounds_against(algo, 4, (0.1, 0.05, 0.2),
                    lambda x, grad, ref_state, mixed_of, lr: _ref_rule_round(name, x, grad, ref_state, mixed_of, lr, hp))


def _rounds_against(algo, seed, lrs, reference):
    """Rounds of `algo` on a block's (6, 301) rows, one per lr, against `reference(x, grad,
    ref_state, mixed_of, lr) -> (payload, x+)` on its own state: the same bits of payload, x+
    and every buffer, and the caller's x, grad and mixed as they were."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 301, generator=gen)
    state, ref_state = algo.init(x), algo.init(x)
    W = torch.rand(6, 6, generator=gen)
    W /= W.sum(1, keepdim=True)
    mixed_of = (lambda p: W @ p) if not algo.centralized else (lambda p: p.mean(0, keepdim=True).expand_as(p).clone())
    for t, lr in enumerate(lrs):
        grad = torch.randn(6, 301, generator=gen)
        want_payload, want_x = reference(x, grad.clone(), ref_state, mixed_of, lr)
        x_copy, grad_copy = x.clone(), grad.clone()
        payload = algo.pre_mix(state, x, grad, lr)
        mixed = mixed_of(payload)
        mixed_copy = mixed.clone()
        x_new = algo.post_mix(state, x, mixed, lr)
        assert torch.equal(_bits(payload), _bits(want_payload)) and torch.equal(_bits(x_new), _bits(want_x)), t
        for key in ref_state:
            if key != "step":   # the references count no steps
                assert torch.equal(_bits(state[key]), _bits(ref_state[key])), (t, key)
        assert torch.equal(x, x_copy) and torch.equal(grad, grad_copy) and torch.equal(mixed, mixed_copy)
        x = x_new


def _ref_adam_step(x, m1, m2, t, lr, betas, eps):
    import math
    bc1, bc2 = 1 - betas[0] ** t, 1 - betas[1] ** t
    denom = (m2.sqrt() / math.sqrt(bc2)).add_(eps)
    return x.addcdiv(m1, denom, value=-lr / bc1)


def _ref_adam_round(name, x, grad, state, mixed_of, lr, hp):
    """A round of an Adam rule as each step computed with a new tensor: (payload, x+)."""
    (b1, b2), eps, wd, neps = hp["betas"], hp["eps"], hp["weight_decay"], hp.get("normalization_eps")
    m1, m2 = state["exp_avg"], state["exp_avg_sq"]
    t = int(state["step"].reshape(-1)[0]) + 1
    if name == "centralized_adam":
        payload = grad.clone()
        g = mixed_of(payload).add(x, alpha=wd)
        m1.mul_(b1).add_(g, alpha=1 - b1)
        m2.mul_(b2).addcmul_(g, g, value=1 - b2)
        return payload, _ref_adam_step(x, m1, m2, t, lr, (b1, b2), eps)
    g = grad.add(x, alpha=wd)
    if name == "dadam":
        m1.mul_(b1).add_(g, alpha=1 - b1)
        m2.mul_(b2).addcmul_(g, g, value=1 - b2)
        payload = _ref_adam_step(x, m1, m2, t, lr, (b1, b2), eps)
    elif name == "qg_adam":
        payload = _ref_adam_step(x, m1.mul(b1).add_(g), m2.mul(b2).addcmul_(g, g, value=1 - b2), t, lr, (b1, b2), eps)
    else:   # qg_adam_v2
        m1.mul_(b1).add_(g, alpha=1 - b1)
        payload = _ref_adam_step(x, m1, m2.mul(b2).addcmul_(g, g, value=1 - b2), t, lr, (b1, b2), eps)
    x_new = mixed_of(payload).clone()
    if name == "qg_adam":
        d = x.sub(x_new)
        d.div_(d.norm(p=2, dim=-1, keepdim=True) + neps)
        m1.mul_(b1).add_(d, alpha=1 - b1)
        m2.mul_(b2).addcmul_(d, d, value=1 - b2)
    elif name == "qg_adam_v2":
        d = x.sub(x_new)
        d.div_(d.norm(p=2, dim=-1, keepdim=True).add_(neps))
        m2.mul_(b2).addcmul_(d, d, value=1 - b2)
    return payload, x_new


@pytest.mark.parametrize("name", ["dadam", "qg_adam", "qg_adam_v2", "centralized_adam"])
def test_adam_rules_write_over_their_temporaries_with_the_same_bits(name):
    """As the SGD rules': the Adam rules' denominators and progress temporaries reused give the
    bits of a new tensor per step."""
    from qgm_ray.algorithms import make_algorithm
    algo = make_algorithm(name, weight_decay=1e-3)
    hp = dict(algo.hparams)

    def reference(x, grad, ref_state, mixed_of, lr):
        out = _ref_adam_round(name, x, grad, ref_state, mixed_of, lr, hp)
        ref_state["step"] += 1   # Adam's bias correction reads the step: the reference keeps its own
        return out
    _rounds_against(algo, 5, (0.01, 0.005, 0.02), reference)
