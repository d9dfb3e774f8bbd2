"""The official code's rule variants (algorithms/variants.py, qg_adam's normalization_eps)
against independent numpy references in matrix form (X is n x d, one row per client).

The references are written from the official optimizers' equations (pcode/optim/
decentralized_d2.py, decentralized_qg_adam_v2.py, centralized_adam.py, decentralized_qg_sgd.py
with slow_buffer_conf local_step), not from the implementation.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qgm_ray.algorithms import ALGORITHMS, make_algorithm, make_algorithm_from_config
from qgm_ray.config import load_config
from qgm_ray.errors import ConfigError

N, DIM, STEPS = 4, 6, 10

VARIANT_HP = {
    "d2_official": dict(weight_decay=0.01),
    "qg_adam_v2": dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01, normalization_eps=0.3),
    "centralized_adam": dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01),
    "qg_dsgdm_ls": dict(momentum=0.8, weight_decay=0.01, qgm_beta=0.7, qgm_local_step=3),
    "qg_dsgdm_n_ls": dict(momentum=0.8, weight_decay=0.01, qgm_beta=0.7, qgm_local_step=3),
    # qg_adam's eps as a hyper-parameter: a large value so that it shows in the trajectory.
    "qg_adam": dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01, normalization_eps=0.3),
}


class Problem:
    """Heterogeneous least squares f_i(x) = 0.5 ||A_i x - b_i||^2 with per-round noise."""

    def __init__(self, seed, n=N, d=DIM, rows=8):
        rng = np.random.default_rng(seed)
        self.A = rng.normal(size=(n, rows, d)) / np.sqrt(rows)
        self.b = rng.normal(size=(n, rows)) + 3.0 * rng.normal(size=(n, 1))
        self.noise = 0.3 * rng.normal(size=(STEPS, n, d))
        self.x0 = rng.normal(size=(n, d))

    def grads(self, X, t):
        R = np.einsum("nrd,nd->nr", self.A, X) - self.b
        return np.einsum("nrd,nr->nd", self.A, R) + self.noise[t]


def mixing(seed, n=N, steps=STEPS):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        w = rng.dirichlet(np.ones(3))
        out.append(sum(wk * np.eye(n)[rng.permutation(n)] for wk in w))
    return out


def lrs(steps=STEPS):
    return [0.05 * (1.0 + 0.5 * np.sin(t)) for t in range(steps)]  # changes every round


def run_impl(name, hp, problem, Ws, lr_list, block=False):
    """Drive the rule like the engines: per client, or (block=True) on one (n, d) block."""
    algo = make_algorithm(name, **hp)
    n = problem.x0.shape[0]
    if block:
        X = torch.tensor(problem.x0)
        state = algo.init(X)
    else:
        xs = [torch.tensor(problem.x0[i]) for i in range(n)]
        states = [algo.init(x) for x in xs]
    history = []
    for t in range(len(lr_list)):
        lr = lr_list[t]
        W = torch.tensor(np.full((n, n), 1.0 / n) if algo.centralized else Ws[t])
        if block:
            G = torch.tensor(problem.grads(X.numpy(), t))
            X = algo.post_mix(state, X, W @ algo.pre_mix(state, X, G, lr), lr)
            history.append(X.numpy().copy())
        else:
            G = problem.grads(torch.stack(xs).numpy(), t)
            payloads = torch.stack([algo.pre_mix(states[i], xs[i], torch.tensor(G[i]), lr) for i in range(n)])
            mixed = W @ payloads
            xs = [algo.post_mix(states[i], xs[i], mixed[i], lr) for i in range(n)]
            history.append(torch.stack(xs).numpy().copy())
    return history


def ref_run(name, hp, problem, Ws, lr_list):
    X = problem.x0.copy()
    n, d = X.shape
    wd = hp["weight_decay"]
    b1, b2 = hp.get("betas", (0.0, 0.0))
    eps, neps = hp.get("eps", 0.0), hp.get("normalization_eps", 1e-8)
    beta, mu, L = hp.get("momentum", 0.0), hp.get("qgm_beta", 0.0), hp.get("qgm_local_step", 1)
    M, M2, V = np.zeros((n, d)), np.zeros((n, d)), np.zeros((n, d))
    J = np.full((n, n), 1.0 / n)
    X_prev = G_prev = None
    history = []
    for t, lr in enumerate(lr_list):
        W, Graw = Ws[t], problem.grads(X, t)
        G = Graw + wd * X
        k = t + 1
        if name == "d2_official":
            X_new = W @ (X - lr * G) if t == 0 else W @ (2 * X - X_prev - lr * (G - G_prev))
            X_prev, G_prev = X, G
        elif name == "qg_adam_v2":
            M = b1 * M + (1 - b1) * G
            E2 = b2 * M2 + (1 - b2) * G**2
            X_new = W @ (X - lr / (1 - b1**k) * M / (np.sqrt(E2) / np.sqrt(1 - b2**k) + eps))
            D = X - X_new
            D = D / (np.linalg.norm(D, axis=1, keepdims=True) + neps)
            M2 = b2 * M2 + (1 - b2) * D**2
        elif name == "qg_adam":
            E1 = b1 * M + G
            E2 = b2 * M2 + (1 - b2) * G**2
            X_new = W @ (X - lr / (1 - b1**k) * E1 / (np.sqrt(E2) / np.sqrt(1 - b2**k) + eps))
            D = X - X_new
            D = D / (np.linalg.norm(D, axis=1, keepdims=True) + neps)
            M = b1 * M + (1 - b1) * D
            M2 = b2 * M2 + (1 - b2) * D**2
        elif name == "centralized_adam":
            Gbar = J @ Graw + wd * X
            M = b1 * M + (1 - b1) * Gbar
            M2 = b2 * M2 + (1 - b2) * Gbar**2
            X_new = X - lr / (1 - b1**k) * M / (np.sqrt(M2) / np.sqrt(1 - b2**k) + eps)
        elif name in ("qg_dsgdm_ls", "qg_dsgdm_n_ls"):
            M_tmp = beta * M + G
            D = G + beta * M_tmp if name == "qg_dsgdm_n_ls" else M_tmp
            X_new = W @ (X - lr * D)
            V = V + (X - X_new) / lr
            if t % L == 0:
                M = mu * M + (1 - mu) * V / L
                V = np.zeros_like(V)
        else:
            raise AssertionError(name)
        X = X_new
        history.append(X.copy())
    return history


@pytest.mark.parametrize("name", list(VARIANT_HP))
def test_matches_independent_reference(name):
    problem, Ws, lr_list = Problem(seed=1), mixing(seed=2), lrs()
    got = run_impl(name, VARIANT_HP[name], problem, Ws, lr_list)
    want = ref_run(name, VARIANT_HP[name], problem, Ws, lr_list)
    for t, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"{name} round {t}")
    assert np.abs(got[-1] - problem.x0).max() > 1e-2  # it moved


# qg_adam (adam.py) still normalises over the whole tensor; the blocks branch owns that file.
@pytest.mark.parametrize("name", [n for n in VARIANT_HP if n != "qg_adam"])
def test_block_of_clients_equals_clients_one_by_one(name):
    """Each rule also runs on a (k, P) block (leading client dimension), as the blocked
    engines will call it: per-client norms, no per-client Python scalars."""
    problem, Ws, lr_list = Problem(seed=3), mixing(seed=4), lrs()
    one_by_one = run_impl(name, VARIANT_HP[name], problem, Ws, lr_list)
    blocked = run_impl(name, VARIANT_HP[name], problem, Ws, lr_list, block=True)
    np.testing.assert_allclose(blocked[-1], one_by_one[-1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", [n for n in VARIANT_HP if n != "qg_adam"])
def test_block_rows_at_different_steps(name):
    """After an elastic join a block holds rows at different steps: two veterans (3 rounds
    done) and two newcomers. Each row must follow its own first-round branch, bias
    corrections and refresh schedule: the block equals the clients stepped one by one."""
    algo = make_algorithm(name, **VARIANT_HP[name])
    problem, lr_list = Problem(seed=14), lrs()
    rng = np.random.default_rng(15)
    xs = [torch.tensor(problem.x0[i]) for i in range(N)]
    states = [algo.init(x) for x in xs]
    for t in range(3):  # only the two veterans run, mixing between themselves
        G = problem.grads(torch.stack(xs).numpy(), t)
        pay = torch.stack([algo.pre_mix(states[i], xs[i], torch.tensor(G[i]), lr_list[t]) for i in range(2)])
        mixed = torch.full((2, 2), 0.5, dtype=torch.float64) @ pay if algo.centralized else \
            torch.tensor([[0.7, 0.3], [0.3, 0.7]], dtype=torch.float64) @ pay
        xs[:2] = [algo.post_mix(states[i], xs[i], mixed[i], lr_list[t]) for i in range(2)]
    X = torch.stack(xs)
    block = {k: torch.stack([s[k] for s in states]).clone() for k in states[0]}
    assert block["step"].tolist() == [3, 3, 0, 0]
    for t in range(3, 9):
        lr = lr_list[t]
        W = torch.full((N, N), 1.0 / N, dtype=torch.float64) if algo.centralized else \
            torch.tensor(mixing(int(rng.integers(1000)), steps=1)[0])
        G = problem.grads(X.numpy(), t)
        pay = torch.stack([algo.pre_mix(states[i], xs[i], torch.tensor(G[i]), lr) for i in range(N)])
        xs = [algo.post_mix(states[i], xs[i], (W @ pay)[i], lr) for i in range(N)]
        X = algo.post_mix(block, X, W @ algo.pre_mix(block, X, torch.tensor(G), lr), lr)
        np.testing.assert_allclose(X.numpy(), torch.stack(xs).numpy(), rtol=1e-12, atol=1e-13, err_msg=f"round {t}")
    assert block["step"].tolist() == [9, 9, 6, 6]


def test_every_registered_rule_has_a_reference_somewhere():
    from test_algorithms import HP

    assert set(ALGORITHMS) <= set(HP) | set(VARIANT_HP)


# ---- how the variants relate to the rules they vary --------------------------------------

def test_official_d2_equals_d2_at_constant_lr_and_not_when_lr_changes():
    problem, Ws = Problem(seed=5), mixing(seed=6)
    const = [0.05] * STEPS
    np.testing.assert_allclose(run_impl("d2_official", dict(weight_decay=0.01), problem, Ws, const)[-1],
                               run_impl("d2", dict(weight_decay=0.01), problem, Ws, const)[-1], rtol=1e-10, atol=1e-12)
    varying = lrs()
    diff = np.abs(run_impl("d2_official", dict(weight_decay=0.01), problem, Ws, varying)[-1]
                  - run_impl("d2", dict(weight_decay=0.01), problem, Ws, varying)[-1]).max()
    assert diff > 1e-4


@pytest.mark.parametrize("suffix", ["", "_n"])
def test_local_step_one_is_qg_dsgdm(suffix):
    problem, Ws, lr_list = Problem(seed=7), mixing(seed=8), lrs()
    hp = dict(momentum=0.8, weight_decay=0.01, qgm_beta=0.7)
    ls = run_impl(f"qg_dsgdm{suffix}_ls", dict(hp, qgm_local_step=1), problem, Ws, lr_list)
    base = run_impl(f"qg_dsgdm{suffix}", hp, problem, Ws, lr_list)
    np.testing.assert_allclose(ls[-1], base[-1], rtol=1e-12, atol=1e-13)  # same math, other rounding
    # and a longer local_step is a different rule
    ls3 = run_impl(f"qg_dsgdm{suffix}_ls", dict(hp, qgm_local_step=3), problem, Ws, lr_list)
    assert np.abs(ls3[-1] - base[-1]).max() > 1e-4


def test_qg_adam_default_normalization_eps_is_the_official_1e_8():
    problem, Ws, lr_list = Problem(seed=9), mixing(seed=10), lrs()
    hp = dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01)
    for name in ("qg_adam", "qg_adam_v2"):
        got = run_impl(name, hp, problem, Ws, lr_list)
        want = ref_run(name, dict(hp, normalization_eps=1e-8), problem, Ws, lr_list)
        np.testing.assert_allclose(got[-1], want[-1], rtol=1e-10, atol=1e-12)


def test_centralized_adam_is_torch_adam_on_the_average_gradient():
    # Same x on every client; torch.optim.Adam's weight_decay is the same L2 term (added to the
    # gradient), and its bias corrections and eps placement are the official code's.
    problem = Problem(seed=11)
    problem.x0[:] = problem.x0[0]
    hp = dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01)
    lr_list = lrs()
    got = run_impl("centralized_adam", hp, problem, mixing(seed=12), lr_list)
    x = torch.tensor(problem.x0[0].copy(), requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr_list[0], betas=hp["betas"], eps=hp["eps"], weight_decay=hp["weight_decay"])
    for t, lr in enumerate(lr_list):
        opt.param_groups[0]["lr"] = lr
        X = np.repeat(x.detach().numpy()[None], N, axis=0)
        x.grad = torch.tensor(problem.grads(X, t).mean(axis=0))
        opt.step()
        np.testing.assert_allclose(got[t], np.repeat(x.detach().numpy()[None], N, axis=0), rtol=1e-10, atol=1e-12)


def test_qg_adam_v2_first_moment_is_local_adam():
    """v2's first moment sees only the local gradients, as DAdam's; its second moment does not."""
    rng = np.random.default_rng(13)
    v2, dadam = make_algorithm("qg_adam_v2"), make_algorithm("dadam")
    x = torch.tensor(rng.normal(size=DIM))
    s_v2, s_da = v2.init(x), dadam.init(x)
    for _ in range(3):
        g = torch.tensor(rng.normal(size=DIM))
        mixed = 0.8 * v2.pre_mix(s_v2, x, g, 0.1) + 0.2 * torch.tensor(rng.normal(size=DIM))
        dadam.pre_mix(s_da, x, g, 0.1)
        dadam.post_mix(s_da, x, mixed, 0.1)
        x = v2.post_mix(s_v2, x, mixed, 0.1)
    torch.testing.assert_close(s_v2["exp_avg"], s_da["exp_avg"])
    assert not torch.allclose(s_v2["exp_avg_sq"], s_da["exp_avg_sq"])


# ---- configuration -------------------------------------------------------------------------

def test_hparams_from_config_and_bad_values():
    cfg = load_config(None, ["algorithm.name=qg_dsgdm_n_ls", "algorithm.qgm_local_step=4"])
    assert make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams()).hparams["qgm_local_step"] == 4
    cfg = load_config(None, ["algorithm.name=qg_adam", "algorithm.normalization_eps=1e-3"])
    assert make_algorithm_from_config("qg_adam", cfg.algorithm.hparams()).hparams["normalization_eps"] == 1e-3
    for override, key in [("algorithm.qgm_local_step=0", "qgm_local_step"),
                          ("algorithm.normalization_eps=0", "normalization_eps")]:
        name = "qg_dsgdm_ls" if "local" in key else "qg_adam_v2"
        with pytest.raises(ConfigError, match=key) as e:
            load_config(None, [f"algorithm.name={name}", override])
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="qgm_local_step"):
        make_algorithm("qg_dsgdm_ls", qgm_local_step=2.5)
    with pytest.raises(ConfigError, match="normalization_eps"):
        make_algorithm("dadam", normalization_eps=1e-3)  # DAdam has no normalisation
    # A config for another rule may carry the keys; the ones a rule reads are validated.
    assert "qgm_local_step" not in make_algorithm_from_config("qg_dsgdm_n", cfg.algorithm.hparams()).hparams
