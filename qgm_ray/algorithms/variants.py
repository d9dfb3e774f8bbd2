"""The official code's other update rules, each a pure function plus a thin class.

  d2_official        D^2 exactly as pcode/optim/decentralized_d2.py: the correction term is
                     `lr*(g - g_prev)` (the current lr times the gradient difference). `d2`
                     differences the steps instead; the two agree at a constant lr (d2.py).
  qg_adam_v2         pcode/optim/decentralized_qg_adam_v2.py, what the official launcher
                     builds for `--optimizer decentralized_qg_adam`: the first moment is
                     plain local Adam, only the second moment is quasi-global (refreshed
                     after gossip from the normalised parameter progress).
  centralized_adam   pcode/optim/centralized_adam.py: all-reduce the raw gradients, then one
                     Adam step (weight decay added after the average) on every client.
  qg_dsgdm_ls(_n)    decentralized_qg_sgd.py with `slow_buffer_conf local_step=L`: gossip
                     every round, but refresh the quasi-global buffer only every L rounds,
                     from the mean progress over those rounds.

Every function works on a single client's flat vector (P,) and on a block of k clients
(k, P) alike: per-client reductions are taken along the last dimension, the step counter has
one entry per row (shape params.shape[:-1], on the CPU), and rows may be at different steps
(an elastic joiner starts at 0): first-round branches and Adam bias corrections are per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# torch is imported where a tensor is made: config validation reads the rules' knobs
# (defaults, checks), and parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.adam import _AdamBase, adam_step
from qgm_ray.algorithms.base import Algorithm, State, finish_round, new_step_counter, rows_where, with_weight_decay
from qgm_ray.algorithms.sgd import QGDSGDm


def _column(values: Tensor, like: Tensor) -> Tensor:
    """Per-row values shaped to broadcast over the rows of `like`."""
    return values.to(dtype=like.dtype, device=like.device).reshape(*values.shape, *([1] * (like.dim() - values.dim())))


# The functional core: pure functions over (k, P) rows or (P,) vectors, as torch.optim's.

def normalized_progress(x: Tensor, x_new: Tensor, eps: float) -> Tensor:
    """`(x - x+) / (||x - x+|| + eps)`, the norm taken per client (over the last dimension)."""
    d = x.sub(x_new)
    return d.div_(d.norm(p=2, dim=-1, keepdim=True).add_(eps))


def d2_official_pre_mix(
    x: Tensor, grad: Tensor, x_prev: Tensor, g_prev: Tensor, first, lr: float, weight_decay: float
) -> Tensor:
    """Payload `x - lr*g` (first round) or `2x - x_prev - lr*(g - g_prev)`; records x and g
    (with weight decay) in `x_prev`, `g_prev` in place. `first`: bool, or one per row."""
    import torch
    g = with_weight_decay(grad, x, weight_decay)
    payload = rows_where(torch.as_tensor(first), lambda: x.add(g, alpha=-lr),
                         lambda: (2 * x).sub_(x_prev).sub_(g.sub(g_prev), alpha=lr))
    x_prev.copy_(x)
    g_prev.copy_(g)
    return payload


def qg_adam_v2_pre_mix(
    x: Tensor, grad: Tensor, m1: Tensor, m2: Tensor, t: Tensor,
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
) -> Tensor:
    # m1 is updated in place (local Adam); m2 is only read: its local update is a temporary,
    # the stored second moment changes after gossip (qg_adam_v2_post_mix).
    beta1, beta2 = betas
    g = with_weight_decay(grad, x, weight_decay)
    m1.mul_(beta1).add_(g, alpha=1 - beta1)
    e2 = m2.mul(beta2).addcmul_(g, g, value=1 - beta2)
    return adam_step(x, m1, e2, t, lr, betas, eps, own_m2=True)


def qg_adam_v2_post_mix(x: Tensor, x_new: Tensor, m2: Tensor, beta2: float, normalization_eps: float) -> Tensor:
    """Refresh m2 from the normalised progress; returns x+ (`x_new` as is, as qg_adam_post_mix)."""
    d = normalized_progress(x, x_new, normalization_eps)
    m2.mul_(beta2).addcmul_(d, d, value=1 - beta2)
    return x_new


def centralized_adam_post_mix(
    x: Tensor, mean_grad: Tensor, m1: Tensor, m2: Tensor, t: Tensor,
    lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
) -> Tensor:
    beta1, beta2 = betas
    g = mean_grad.add(x, alpha=weight_decay)
    m1.mul_(beta1).add_(g, alpha=1 - beta1)
    m2.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    return adam_step(x, m1, m2, t, lr, betas, eps)


def qg_local_step_update(
    m: Tensor, progress: Tensor, delta: Tensor, t: Tensor, lr: float, mu: float, local_step: int
) -> None:
    """`progress += delta/lr` (delta = x - x+, this round's progress); on rounds t with t % local_step == 0 (t counts from 0, as
    the official `local_index`; one per row), `m <- mu*m + (1-mu)*progress/local_step` and
    the sum restarts.

    Like the official code, the first refresh is at round 0, from that round's progress alone
    (still divided by local_step). With local_step = 1 this is `qg_momentum_update`.
    """
    import torch
    if lr < 0:
        raise ValueError(f"qg momentum needs lr >= 0, got {lr!r}")
    if lr > 0:  # lr = 0: no optimisation step to learn a direction from (see sgd.py)
        progress.add_(delta, alpha=1.0 / lr)
    refresh = torch.as_tensor(t) % local_step == 0
    if bool(refresh.all()):
        m.mul_(mu).add_(progress, alpha=(1.0 - mu) / local_step)
        progress.zero_()
    elif bool(refresh.any()):  # rows at different steps (after an elastic join)
        rows = _column(refresh, m).bool()
        m.copy_(torch.where(rows, m.mul(mu).add_(progress, alpha=(1.0 - mu) / local_step), m))
        progress.masked_fill_(rows, 0.0)


# The rules: thin classes that hold the hyper-parameters and pass their state to the functions above.

class D2Official(Algorithm):

    def init(self, params: Tensor) -> State:
        import torch
        return {"prev_params": torch.zeros_like(params), "prev_grad": torch.zeros_like(params),
                "step": new_step_counter(params)}

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return d2_official_pre_mix(
            params, grad, state["prev_params"], state["prev_grad"], state["step"] == 0, lr, self.weight_decay
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        finish_round(state)
        return mixed


class _RowAdam(_AdamBase):
    def init(self, params: Tensor) -> State:
        import torch
        return {"exp_avg": torch.zeros_like(params), "exp_avg_sq": torch.zeros_like(params), "step": new_step_counter(params)}


class QGAdamV2(_RowAdam):
    defaults = {"normalization_eps": 1e-8}

    def __init__(self, name: str, hparams: dict[str, Any] | None = None):
        super().__init__(name, hparams)
        self.normalization_eps: float = self.hparams["normalization_eps"]

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return qg_adam_v2_pre_mix(
            params, grad, state["exp_avg"], state["exp_avg_sq"], state["step"] + 1,
            lr, self.betas, self.eps, self.weight_decay,
        )

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        x_new = qg_adam_v2_post_mix(params, mixed, state["exp_avg_sq"], self.betas[1], self.normalization_eps)
        finish_round(state)
        return x_new


class CentralizedAdam(_RowAdam):
    centralized = True
    push_sum = False   # its payload is a gradient, all-reduced

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return grad.clone()

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        x_new = centralized_adam_post_mix(
            params, mixed, state["exp_avg"], state["exp_avg_sq"], state["step"] + 1,
            lr, self.betas, self.eps, self.weight_decay,
        )
        finish_round(state)
        return x_new


class QGDSGDmLocalStep(QGDSGDm):
    defaults = {"qgm_local_step": 1}

    def __init__(self, name: str, hparams: dict[str, Any] | None = None, nesterov: bool = False):
        super().__init__(name, hparams, nesterov)
        self.qgm_local_step: int = self.hparams["qgm_local_step"]

    def init(self, params: Tensor) -> State:
        import torch
        state = super().init(params)
        state["progress_sum"] = torch.zeros_like(params)
        state["step"] = new_step_counter(params)
        return state

    # pre_mix is QGDSGDm's: the local step is the same, only the buffer refresh differs.

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        qg_local_step_update(
            state["momentum_buffer"], state["progress_sum"], params.sub(mixed), state["step"], lr,
            self.qgm_beta, self.qgm_local_step,
        )
        finish_round(state)
        return mixed
