"""Update rules (qgm_ray.algorithms) against independent whole-network numpy references.

The references are written in matrix form, X is n x d (one row per client), gossip is
`W @ X`, from DESIGN.md's equations and not from the implementation: they share no code.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from qgm_ray.algorithms import ALGORITHMS, make_algorithm, make_algorithm_from_config
from qgm_ray.errors import ConfigError

N, DIM, STEPS = 4, 7, 9

# Non-default values everywhere so that a hard-coded default shows up as a mismatch.
HP = {
    "dsgd": dict(weight_decay=0.01),
    "dsgdm": dict(momentum=0.8, weight_decay=0.01),
    "dsgdm_n": dict(momentum=0.8, weight_decay=0.01),
    "qg_dsgdm": dict(momentum=0.8, weight_decay=0.01, qgm_beta=0.7),
    "qg_dsgdm_n": dict(momentum=0.8, weight_decay=0.01, qgm_beta=0.7),
    "d2": dict(weight_decay=0.01),
    "gradient_tracking": dict(momentum=0.8, weight_decay=0.01, nesterov=False),
    "dadam": dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01),
    "qg_adam": dict(betas=(0.85, 0.99), eps=1e-6, weight_decay=0.01),
    "centralized_sgdm": dict(momentum=0.8, weight_decay=0.01),
    "centralized_sgdm_n": dict(momentum=0.8, weight_decay=0.01),
}


# ---- problem: heterogeneous quadratics plus per-step noise --------------------------------

class Problem:
    def __init__(self, seed: int, n: int = N, d: int = DIM, rows: int = 10, hetero: float = 1.0, noise: float = 0.3):
        rng = np.random.default_rng(seed)
        self.A = rng.normal(size=(n, rows, d)) / np.sqrt(rows)
        self.b = hetero * rng.normal(size=(n, rows)) + 3.0 * hetero * rng.normal(size=(n, 1))
        self.noise = noise * rng.normal(size=(STEPS, n, d))
        self.x0 = rng.normal(size=(n, d))

    def grads(self, X: np.ndarray, t: int | None = None) -> np.ndarray:
        """Raw gradients (no weight decay) of f_i(x) = 0.5 ||A_i x - b_i||^2, one row per client."""
        R = np.einsum("nrd,nd->nr", self.A, X) - self.b
        G = np.einsum("nrd,nr->nd", self.A, R)
        return G if t is None else G + self.noise[t]

    def optimum(self) -> np.ndarray:
        H = np.einsum("nrd,nre->de", self.A, self.A)
        return np.linalg.solve(H, np.einsum("nrd,nr->d", self.A, self.b))


def random_doubly_stochastic(rng: np.random.Generator, n: int, k: int = 3) -> np.ndarray:
    """Convex combination of k random permutation matrices (Birkhoff)."""
    weights = rng.dirichlet(np.ones(k))
    return sum(w * np.eye(n)[rng.permutation(n)] for w in weights)


def gossip_matrices(seed: int, n: int = N, steps: int = STEPS) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_doubly_stochastic(rng, n) for _ in range(steps)]


def learning_rates(steps: int = STEPS) -> list[float]:
    # Varying per round, to catch an lr taken from the wrong call or round.
    return [0.05 * (1.0 + 0.5 * np.sin(t)) for t in range(steps)]


# ---- the implementation, driven like the local engine ------------------------------------

def run_impl(name, hp, problem, Ws, lrs, steps=STEPS, dtype=torch.float64, noisy=True):
    algo = make_algorithm(name, **hp)
    n = problem.x0.shape[0]
    xs = [torch.tensor(problem.x0[i], dtype=dtype) for i in range(n)]
    states = [algo.init(x) for x in xs]
    history = []
    for t in range(steps):
        G = problem.grads(torch.stack(xs).numpy(), t if noisy else None)
        lr = lrs[t]
        payloads = [algo.pre_mix(states[i], xs[i], torch.tensor(G[i], dtype=dtype), lr) for i in range(n)]
        W = np.full((n, n), 1.0 / n) if algo.centralized else Ws[t]
        mixed = torch.tensor(W, dtype=dtype) @ torch.stack(payloads)
        xs = [algo.post_mix(states[i], xs[i], mixed[i], lr) for i in range(n)]
        history.append(torch.stack(xs).numpy().copy())
    return history, states


# ---- independent references (numpy, matrix form) -----------------------------------------

def ref_run(name, hp, problem, Ws, lrs, steps=STEPS):
    X = problem.x0.copy()
    n, d = X.shape
    wd = hp["weight_decay"]
    beta = hp.get("momentum", 0.0)
    mu = hp.get("qgm_beta", 0.0)
    b1, b2 = hp.get("betas", (0.0, 0.0))
    eps = hp.get("eps", 0.0)
    nesterov = name.endswith("_n") or hp.get("nesterov", False)
    M = np.zeros((n, d))
    M2 = np.zeros((n, d))
    Y = np.zeros((n, d))
    X_prev = G_prev = S_prev = None
    J = np.full((n, n), 1.0 / n)
    history = []
    for t in range(steps):
        lr, W = lrs[t], Ws[t]
        Graw = problem.grads(X, t)
        G = Graw + wd * X
        if name == "dsgd":
            X_new = W @ (X - lr * G)
        elif name in ("dsgdm", "dsgdm_n"):
            M = beta * M + G
            D = G + beta * M if nesterov else M
            X_new = W @ (X - lr * D)
        elif name in ("qg_dsgdm", "qg_dsgdm_n"):
            M_tmp = beta * M + G
            D = G + beta * M_tmp if nesterov else M_tmp
            X_new = W @ (X - lr * D)
            M = mu * M + (1 - mu) * (X - X_new) / lr
        elif name == "d2":
            if t == 0:
                X_new = W @ (X - lr * G)
            else:
                X_new = W @ (2 * X - X_prev - (lr * G - S_prev))
            X_prev, S_prev = X, lr * G
        elif name == "gradient_tracking":
            Y = G if t == 0 else Y + G - G_prev
            G_prev = G
            X_bar, Y_bar = W @ X, W @ Y
            M = beta * M + Y
            D = Y + beta * M if nesterov else M
            X_new = X_bar - lr * D
            Y = Y_bar
        elif name == "dadam":
            M = b1 * M + (1 - b1) * G
            M2 = b2 * M2 + (1 - b2) * G**2
            k = t + 1
            m_hat, v_hat = M / (1 - b1**k), M2 / (1 - b2**k)
            X_new = W @ (X - lr * m_hat / (np.sqrt(v_hat) + eps))
        elif name == "qg_adam":
            E1 = b1 * M + G
            E2 = b2 * M2 + (1 - b2) * G**2
            k = t + 1
            X_new = W @ (X - lr / (1 - b1**k) * E1 / (np.sqrt(E2 / (1 - b2**k)) + eps))
            Dlt = X - X_new
            Dh = Dlt / (np.linalg.norm(Dlt, axis=1, keepdims=True) + 1e-8)
            M = b1 * M + (1 - b1) * Dh
            M2 = b2 * M2 + (1 - b2) * Dh**2
        elif name in ("centralized_sgdm", "centralized_sgdm_n"):
            Gbar = J @ Graw + wd * X
            M = beta * M + Gbar
            D = Gbar + beta * M if nesterov else M
            X_new = X - lr * D
        else:
            raise AssertionError(name)
        X = X_new
        history.append(X.copy())
    return history


# The official code's variants (d2_official, qg_adam_v2, ...) have their references in test_variants.py.
@pytest.mark.parametrize("name", tuple(HP))
def test_matches_independent_reference(name):
    problem = Problem(seed=1)
    Ws, lrs = gossip_matrices(seed=2), learning_rates()
    got, _ = run_impl(name, HP[name], problem, Ws, lrs)
    want = ref_run(name, HP[name], problem, Ws, lrs)
    for t, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=f"{name} round {t}")
    # Sanity: the run actually moved (a no-op rule would match a no-op reference).
    assert np.abs(got[-1] - problem.x0).max() > 1e-2


def test_gradient_tracking_nesterov_and_no_momentum_match_reference():
    problem = Problem(seed=3)
    Ws, lrs = gossip_matrices(seed=4), learning_rates()
    for hp in (dict(momentum=0.7, weight_decay=0.02, nesterov=True), dict(momentum=0.0, weight_decay=0.0)):
        got, _ = run_impl("gradient_tracking", hp, problem, Ws, lrs)
        want = ref_run("gradient_tracking", hp, problem, Ws, lrs)
        np.testing.assert_allclose(got[-1], want[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_float32_payload_and_params_keep_dtype_and_shape(name):
    algo = make_algorithm(name)
    x = torch.randn(5)
    state = algo.init(x)
    payload = algo.pre_mix(state, x, torch.randn(5), 0.1)
    assert payload.dtype == torch.float32 and payload.shape == (algo.payload_size(5),)
    x_new = algo.post_mix(state, x, payload, 0.1)
    assert x_new.dtype == torch.float32 and x_new.shape == (5,)


# ---- properties ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", "_n"])
def test_dsgdm_with_complete_averaging_equals_centralized(suffix):
    # Same x on every client: W = 1/n makes DSGDm's average of local momentum steps the
    # global momentum step (momentum is linear), even with heterogeneous gradients.
    problem = Problem(seed=5)
    problem.x0[:] = problem.x0[0]
    J = [np.full((N, N), 1.0 / N)] * STEPS
    hp = dict(momentum=0.9, weight_decay=1e-3)
    decentralized, _ = run_impl("dsgdm" + suffix, hp, problem, J, learning_rates())
    centralized, _ = run_impl("centralized_sgdm" + suffix, hp, problem, J, learning_rates())
    np.testing.assert_allclose(decentralized[-1], centralized[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["qg_dsgdm", "qg_dsgdm_n"])
def test_qg_buffer_tracks_parameter_progress(name):
    mu, lr = 0.6, 0.07
    algo = make_algorithm(name, momentum=0.9, qgm_beta=mu)
    rng = np.random.default_rng(6)
    xs = [torch.tensor(rng.normal(size=DIM)) for _ in range(N)]
    states = [algo.init(x) for x in xs]
    for _ in range(4):
        W = torch.tensor(random_doubly_stochastic(rng, N))
        before = [s["momentum_buffer"].clone() for s in states]
        payloads = [algo.pre_mix(s, x, torch.tensor(rng.normal(size=DIM)), lr) for s, x in zip(states, xs)]
        # pre_mix must not touch the buffer: the local step uses a temporary.
        for s, m in zip(states, before):
            assert torch.equal(s["momentum_buffer"], m)
        mixed = W @ torch.stack(payloads)
        new = [algo.post_mix(s, x, mixed[i], lr) for i, (s, x) in enumerate(zip(states, xs))]
        for s, m, x, x_new in zip(states, before, xs, new):
            torch.testing.assert_close(s["momentum_buffer"], mu * m + (1 - mu) * (x - x_new) / lr)
        xs = new


def heterogeneous_quadratics_on_a_ring(n=5, d=4):
    """(problem starting at 0, its exact optimum, ring W with weights 1/3)."""
    problem = Problem(seed=7, n=n, d=d, rows=12, hetero=3.0)
    problem.x0 = np.zeros((n, d))
    ring = np.zeros((n, n))
    for i in range(n):
        ring[i, [i, (i - 1) % n, (i + 1) % n]] = 1.0 / 3.0
    return problem, problem.optimum(), ring


def test_d2_and_gradient_tracking_reach_exact_optimum_where_dsgd_does_not():
    problem, x_star, ring = heterogeneous_quadratics_on_a_ring()
    steps, lr = 500, 0.1
    Ws, lrs = [ring] * steps, [lr] * steps

    def error(name, hp):
        history, _ = run_impl(name, hp, problem, Ws, lrs, steps=steps, noisy=False)
        return np.abs(history[-1] - x_star).max()

    d2_err = error("d2", dict(weight_decay=0.0))
    gt_err = error("gradient_tracking", dict(momentum=0.0, weight_decay=0.0))
    dsgd_err = error("dsgd", dict(weight_decay=0.0))
    assert d2_err < 1e-6, d2_err
    assert gt_err < 1e-6, gt_err
    assert dsgd_err > 1e-2, dsgd_err


def test_d2_stays_exact_through_an_lr_decay():
    # A multistep schedule (lr 0.1 then 0.05) must not leave a drift behind: D^2 differences
    # the previous *step* lr*g, not the previous gradient (see algorithms/d2.py).
    problem, x_star, ring = heterogeneous_quadratics_on_a_ring()
    steps = 1500
    lrs = [0.1] * 20 + [0.05] * (steps - 20)  # decay long before convergence
    history, _ = run_impl("d2", dict(weight_decay=0.0), problem, [ring] * steps, lrs, steps=steps, noisy=False)
    assert np.abs(history[-1] - x_star).max() < 1e-6


@pytest.mark.parametrize("name", ALGORITHMS)
def test_state_is_checkpointable_dict_of_tensors_and_args_are_not_mutated(name):
    algo = make_algorithm(name, **HP.get(name, {}))
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.normal(size=DIM))
    state = algo.init(x)
    assert isinstance(state, dict) and state
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())

    def round_(state, x, seed):
        g = torch.tensor(np.random.default_rng(seed).normal(size=DIM))
        x_copy, g_copy = x.clone(), g.clone()
        payload = algo.pre_mix(state, x, g, 0.05)
        assert payload.data_ptr() not in (x.data_ptr(), g.data_ptr())
        mixed = 0.9 * payload + 0.1
        mixed_copy = mixed.clone()
        x_new = algo.post_mix(state, x, mixed, 0.05)
        assert torch.equal(x, x_copy) and torch.equal(g, g_copy) and torch.equal(mixed, mixed_copy)
        # x+ may be `mixed` itself (the engines copy it into their parameters), never x or a buffer
        assert x_new.data_ptr() != x.data_ptr()
        assert all(x_new.data_ptr() != v.data_ptr() for v in state.values())
        return x_new

    for seed in range(3):
        x = round_(state, x, seed)
    assert int(state["step"]) == 3
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = torch.load(buf)
    twin = copy.deepcopy(x)
    for seed in range(3, 6):
        x = round_(state, x, seed)
        twin = round_(restored, twin, seed)
    assert torch.equal(x, twin)
    assert state.keys() == restored.keys()
    assert all(torch.equal(state[k], restored[k]) for k in state)


# ---- construction and validation ----------------------------------------------------------

def test_names_flags_and_payload_size():
    assert ALGORITHMS == (
        "dsgd", "dsgdm", "dsgdm_n", "qg_dsgdm", "qg_dsgdm_n", "d2", "gradient_tracking",
        "dadam", "qg_adam", "centralized_sgdm", "centralized_sgdm_n",
        "d2_official", "qg_adam_v2", "centralized_adam", "qg_dsgdm_ls", "qg_dsgdm_n_ls",
    )
    for name in ALGORITHMS:
        algo = make_algorithm(name)
        assert algo.name == name
        assert algo.centralized == name.startswith("centralized")
        assert algo.payload_size(10) == (20 if name == "gradient_tracking" else 10)
        # hparams are the resolved, user-settable values: they rebuild the same algorithm.
        assert make_algorithm(name, **algo.hparams).hparams == algo.hparams
    assert make_algorithm("qg_dsgdm_n").hparams == dict(momentum=0.9, weight_decay=1e-4, qgm_beta=0.9)
    assert make_algorithm("qg_adam").hparams == dict(
        betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, normalization_eps=1e-8)
    assert make_algorithm("gradient_tracking").hparams["nesterov"] is False


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        make_algorithm("qgm")
    assert "qgm" in str(err.value) and all(name in str(err.value) for name in ALGORITHMS)
    with pytest.raises(ConfigError):
        make_algorithm_from_config("sgd", {})


@pytest.mark.parametrize(
    "name, key",
    [("dsgd", "nesterov"), ("dsgd", "qgm_beta"), ("dsgdm_n", "nesterov"), ("dsgdm", "qgm_beta"),
     ("dadam", "momentum"), ("qg_adam", "qgm_beta"), ("d2", "momentum"), ("dsgdm", "lr")],
)
def test_unknown_hparam_is_named_with_accepted_ones(name, key):
    with pytest.raises(ConfigError) as err:
        make_algorithm(name, **{key: 0.5})
    message = str(err.value)
    assert repr(key) in message and "weight_decay" in message and name in message


@pytest.mark.parametrize(
    "hp",
    [dict(momentum=1.0), dict(momentum=-0.1), dict(momentum=True), dict(momentum="0.9"),
     dict(weight_decay=-1e-4), dict(weight_decay=float("nan")), dict(qgm_beta=1.5)],
)
def test_bad_sgd_values(hp):
    with pytest.raises(ConfigError, match=next(iter(hp))):
        make_algorithm("qg_dsgdm_n", **hp)


@pytest.mark.parametrize(
    "hp", [dict(eps=0.0), dict(eps=-1.0), dict(betas=(0.9,)), dict(betas=(0.9, 1.0)), dict(betas="ab")]
)
def test_bad_adam_values(hp):
    with pytest.raises(ConfigError, match="eps|betas"):
        make_algorithm("qg_adam", **hp)


def test_bad_nesterov_value():
    with pytest.raises(ConfigError, match="nesterov"):
        make_algorithm("gradient_tracking", nesterov="yes")


def test_from_config_drops_unused_keys_but_validates_used_ones():
    full = dict(momentum=0.5, weight_decay=0.0, qgm_beta=0.3, betas=[0.8, 0.9], eps=1e-7, nesterov=True, lr=0.1)
    assert make_algorithm_from_config("dsgd", full).hparams == dict(weight_decay=0.0)
    assert make_algorithm_from_config("qg_dsgdm_n", full).hparams == dict(momentum=0.5, weight_decay=0.0, qgm_beta=0.3)
    # YAML lists become tuples.
    assert make_algorithm_from_config("dadam", full).hparams["betas"] == (0.8, 0.9)
    assert make_algorithm_from_config("gradient_tracking", full).hparams["nesterov"] is True
    with pytest.raises(ConfigError, match="momentum"):
        make_algorithm_from_config("dsgdm", dict(full, momentum=2.0))
    # A bad value for a key the algorithm ignores is not its concern.
    assert make_algorithm_from_config("dsgd", dict(full, momentum=2.0)).name == "dsgd"


def test_qg_momentum_with_zero_lr_keeps_buffer_and_negative_lr_is_rejected():
    algo = make_algorithm("qg_dsgdm_n")
    x = torch.randn(DIM, dtype=torch.float64)
    state = algo.init(x)
    x = algo.post_mix(state, x, algo.pre_mix(state, x, torch.randn(DIM, dtype=torch.float64), 0.1) * 0.5, 0.1)
    m = state["momentum_buffer"].clone()
    assert m.abs().sum() > 0
    x_new = algo.post_mix(state, x, algo.pre_mix(state, x, torch.randn(DIM, dtype=torch.float64), 0.0) * 0.5, 0.0)
    assert torch.equal(state["momentum_buffer"], m) and torch.isfinite(x_new).all()
    with pytest.raises(ValueError, match="lr"):
        algo.post_mix(state, x, x.clone(), -0.1)
