"""A rule with a knob of its own: heavy-ball decentralized SGD on clipped gradients.

    algorithm:
      name: examples.clip_rule:ClippedSGD
      momentum: 0.9          # a knob every rule shares: the top-level key sets it
      options: {clip: 0.5}   # this rule's own knob, declared in `defaults`

Each client clips its mini-batch gradient to norm `clip` before the momentum step, then
gossips its parameters. The tensors are a block's (k, P) rows (one row per client) or one
client's (P,) vector: every per-client reduction is along the last dimension.
"""
import torch

import qgm_ray


class ClippedSGD(qgm_ray.Algorithm):
    # Knobs and their defaults; the default's type is the knob's type (`clip: "big"` is a
    # config error). weight_decay comes from qgm_ray.Algorithm.
    defaults = {"momentum": 0.9, "clip": 1.0}
    checks = {"momentum": qgm_ray.unit_interval, "clip": qgm_ray.positive}
    # Its payload is the parameters after a local step: push-sum may de-bias it on a directed graph.
    push_sum = True

    def init(self, params):
        return {"momentum_buffer": torch.zeros_like(params), "step": qgm_ray.new_step_counter(params)}

    def pre_mix(self, state, params, grad, lr):
        clip = self.hparams["clip"]
        norm = grad.norm(dim=-1, keepdim=True)
        grad = grad * (clip / norm.clamp_min(1e-12)).clamp(max=1.0)
        g = qgm_ray.with_weight_decay(grad, params, self.weight_decay)
        m = state["momentum_buffer"]
        m.mul_(self.hparams["momentum"]).add_(g)
        return params.add(m, alpha=-lr)          # the payload: sent to the neighbours

    def post_mix(self, state, params, mixed, lr):
        qgm_ray.finish_round(state)
        return mixed.clone()                     # `mixed` may be a view of the engine's buffer
