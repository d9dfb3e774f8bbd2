"""Decentralized update rules as pure functions on flat tensors (docs/design.md, "Algorithm contract").

    algo = make_algorithm("qg_dsgdm_n", momentum=0.9, qgm_beta=0.9)
    state = algo.init(x)                       # dict of tensors, checkpointable
    payload = algo.pre_mix(state, x, grad, lr) # sent to neighbours
    x = algo.post_mix(state, x, sum_j W[i, j] * payload_j, lr)

The math lives in module-level functions (`sgd`, `d2`, `tracking`, `adam`); the classes
only bind hyper-parameters and state keys to them.

A rule declares its knobs in the class attribute `defaults` (merged over its bases); the
built-ins do it the same way as a user's rule referenced by `"package.module:Class"`.
"""

from qgm_ray.algorithms.base import Algorithm, State
from qgm_ray.algorithms.hparams import SHARED
from qgm_ray.algorithms.registry import (
    ALGORITHMS,
    accepted_hparams,
    algorithm_class,
    make_algorithm,
    make_algorithm_from_config,
    own_options,
)

__all__ = [
    "ALGORITHMS",
    "SHARED",
    "Algorithm",
    "State",
    "accepted_hparams",
    "algorithm_class",
    "make_algorithm",
    "make_algorithm_from_config",
    "own_options",
]
