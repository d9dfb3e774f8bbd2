"""SlowMo (Wang, Tantia, Ballas, Rabbat, ICLR 2020) as the official QGM code offers it for its
decentralized SGD (`pcode/optim/decentralized_sgd.py`, `--slowmo_step_conf
slowmo_tau=T,slowmo_beta=B[,slowmo_alpha=A]`): an outer "slow" momentum over periods of
gossip rounds, each period closed by an exact average of every client's parameters.

After the gossip step of round t (t counts from 0, the official `local_index`: the scheduler
increments it only after the optimizer step), on rounds with t % tau == 0, i.e. t = 0, tau,
2 tau, ...:

    xbar   = (1/n) sum_i x_i                              (an all-reduce over all clients)
    buf    = beta * buf + (x_slow - xbar) / lr_t
    x_slow = x_slow - (alpha * lr_t) * buf
    x_i    = x_slow                                       (every client)

with x_slow = the initial model and buf = 0 at the start, lr_t the round's learning rate,
alpha = 1 unless given. The first outer step is at round 0, after one local round (as in the
official code); after it every period has tau rounds. Local optimizer state (the momentum
buffer) is left as it is, as there.

On a directed graph (push-sum gossip, engine/push_sum.py: SlowMo's own paper runs it on SGP)
the average is the push-sum consensus sum_i w_i z_i / sum_i w_i, and the outer step also
resets every push-sum weight to 1: an exact average is a perfect mixing step, after which
every client holds the same model with equal weight.

Only the official decentralized SGD has it: our `dsgd`, `dsgdm`, `dsgdm_n` (its momentum
off / heavy ball / Nesterov). Its QG, D^2, gradient-tracking and Adam optimizers do not
(decentralized_adam.py only carries a stale "slowmo" comment), so the config refuses them.

The math is here as pure functions; `SlowMo` wraps an update rule so that the slow state is
two more per-client rows of its state (checkpointed, restored and sliced with the rest);
engine/slowmo.py's `SlowMoBarrier` calls `outer_step` on the rounds `due` says, a round
barrier that both engines run the same generic way (engine/barriers.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

# torch is imported where a tensor is made: config validation reads the rules' knobs
# (defaults, checks), and parsing a config loads no torch.
if TYPE_CHECKING:
    from torch import Tensor

from qgm_ray.algorithms.base import State

# The official optimizer that implements it (decentralized_sgd) is these three of ours.
SLOWMO_ALGORITHMS: tuple[str, ...] = ("dsgd", "dsgdm", "dsgdm_n")

SLOW_PARAMS, SLOW_BUFFER = "slowmo_params", "slowmo_buffer"


def is_outer_round(t: int, tau: int) -> bool:
    """Whether round t (from 0) ends with the outer step: `local_index % tau == 0`."""
    return tau > 0 and t % tau == 0


def exact_average(rows: Tensor, weights: Tensor | None = None) -> Tensor:
    """(P,) mean of the (n, P) rows, summed in row order then divided by n (an all-reduce's
    sum and `op="avg"`). An explicit ordered sum, not `mean(0)`: both engines must get the
    same bits, whatever reduction order a kernel would pick.

    With push-sum weights (n,) (directed graphs, rows = the de-biased models z_i): the point
    push-sum conserves, sum_i w_i z_i / sum_i w_i, both sums in row order."""
    if weights is None:
        acc = rows[0].clone()
        for i in range(1, rows.shape[0]):
            acc.add_(rows[i])
        return acc.div_(rows.shape[0])
    acc, total = rows[0].mul(weights[0]), weights[0].clone()
    for i in range(1, rows.shape[0]):
        acc.add_(rows[i].mul(weights[i]))
        total.add_(weights[i])
    return acc.div_(total)


def slowmo_update(x_slow: Tensor, buf: Tensor, xbar: Tensor, lr: float, beta: float,
                  alpha: float) -> tuple[Tensor, Tensor]:
    """One outer step: (new x_slow, new buf). x_slow, buf: (P,) or (k, P) rows; xbar (P,).

    The operations are in the official order (`beta*buf + (x_slow - xbar)/lr`, then
    `x_slow - (alpha*lr)*buf` with alpha*lr one float), each rounded separately: no fused
    multiply-add, so that a reference written from the equations gets the same bits."""
    if not lr > 0:
        # (x_slow - xbar)/lr has no meaning without an optimisation step (lr > 0 is validated
        # for every schedule; this guards direct callers).
        raise ValueError(f"slowmo outer step needs lr > 0, got {lr!r}")
    new_buf = buf.mul(beta).add_(x_slow.sub(xbar).div_(lr))
    new_x = x_slow.sub(new_buf.mul(alpha * lr))
    return new_x, new_buf


class SlowMo:
    """An update rule with SlowMo on top: `pre_mix` / `post_mix` are the inner rule's, `init`
    adds the slow state (x_slow = the client's parameters, buf = 0) as two rows per client."""

    def __init__(self, inner, tau: int, beta: float, alpha: float = 1.0):
        self.inner = inner
        self.tau, self.beta, self.alpha = int(tau), float(beta), float(alpha)
        self.name = inner.name
        self.hparams: dict[str, Any] = {**inner.hparams, "slowmo_tau": self.tau, "slowmo_beta": self.beta,
                                        "slowmo_alpha": self.alpha}
        self.centralized = inner.centralized

    def init(self, params: Tensor) -> State:
        import torch
        state = self.inner.init(params)
        state[SLOW_PARAMS] = params.detach().clone()
        state[SLOW_BUFFER] = torch.zeros_like(params)
        return state

    def pre_mix(self, state: State, params: Tensor, grad: Tensor, lr: float) -> Tensor:
        return self.inner.pre_mix(state, params, grad, lr)

    def post_mix(self, state: State, params: Tensor, mixed: Tensor, lr: float) -> Tensor:
        return self.inner.post_mix(state, params, mixed, lr)

    def payload_size(self, num_params: int) -> int:
        return self.inner.payload_size(num_params)

    def due(self, t: int) -> bool:
        return is_outer_round(t, self.tau)

    def outer_step(self, state: State, params: Tensor, xbar: Tensor, lr: float) -> None:
        """In place on a block's rows (or one client): the slow state steps from the exact
        average `xbar` and every row's parameters become the new x_slow."""
        x_slow, buf = slowmo_update(state[SLOW_PARAMS], state[SLOW_BUFFER], xbar.to(params.device), lr,
                                    self.beta, self.alpha)
        state[SLOW_PARAMS].copy_(x_slow)
        state[SLOW_BUFFER].copy_(buf)
        params.copy_(x_slow)

    def slow_state(self, state: State, row: int) -> tuple[Tensor, Tensor]:
        """(x_slow, buf) of one row, on the CPU: what an elastic joiner adopts."""
        return state[SLOW_PARAMS][row].detach().cpu().clone(), state[SLOW_BUFFER][row].detach().cpu().clone()

    def adopt(self, state: State, rows: list[int], slow: tuple[Tensor, Tensor]) -> None:
        """Rows (elastic joiners) take the run's slow state. Every client holds the same one
        (each outer step computes it from the same all-reduced average), so a joiner that
        adopts it takes the next outer step exactly as the others do."""
        if rows:
            state[SLOW_PARAMS][rows] = slow[0].to(state[SLOW_PARAMS].device)
            state[SLOW_BUFFER][rows] = slow[1].to(state[SLOW_BUFFER].device)

    def __repr__(self) -> str:
        return f"SlowMo({self.inner!r}, tau={self.tau}, beta={self.beta}, alpha={self.alpha})"


def slowmo_of(algorithm):
    """The SlowMo wrapper of a block's algorithm, or None (the default: no outer step)."""
    return algorithm if isinstance(algorithm, SlowMo) else None
