"""Heavy-ball DSGD (the built-in `dsgdm`) written as a plug-in, from DESIGN.md's equations:

    m <- beta*m + (grad + wd*x);   payload = x - lr*m;   x+ = sum_j W[i, j] payload_j

tests/test_plugins.py checks that it gives exactly the built-in's numbers on the same config.
"""
import torch

import qgm_ray


class HeavyBallDSGD(qgm_ray.Algorithm):
    defaults = {"momentum": 0.9}     # shared with the built-ins: set by algorithm.momentum
    push_sum = True

    def init(self, params):
        return {"momentum_buffer": torch.zeros_like(params), "step": qgm_ray.new_step_counter(params)}

    def pre_mix(self, state, params, grad, lr):
        g = qgm_ray.with_weight_decay(grad, params, self.weight_decay)
        m = state["momentum_buffer"].mul_(self.hparams["momentum"]).add_(g)
        return params.add(m, alpha=-lr)

    def post_mix(self, state, params, mixed, lr):
        qgm_ray.finish_round(state)
        return mixed.clone()
