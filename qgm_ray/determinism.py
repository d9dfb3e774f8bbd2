"""`deterministic: true`: the same kernels, in the same order, in every process of a run.

On CPU the engines are bit-identical without it (one intra-op thread per process, the same
blocks, the same ops). On CUDA, cuDNN autotuning, atomics in backward kernels and cuBLAS's
workspace make two runs of the same config differ after a few hundred rounds;
`torch.use_deterministic_algorithms(True)` with `CUBLAS_WORKSPACE_CONFIG=:4096:8` makes them
bit-identical (docs/results/bench/README.md, "GPU"). The variable must be set before the process creates its CUDA context, so the Ray
engine also puts it in every actor's runtime_env (`env_vars`), and `apply` runs first thing in
the driver (LocalEngine, runner) and in each actor.
"""
from __future__ import annotations

import os

CUBLAS_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def env_vars(cfg) -> dict:
    """Environment variables a process of this run needs before CUDA starts."""
    return dict(CUBLAS_ENV) if getattr(cfg, "deterministic", False) else {}


def apply(cfg) -> bool:
    """Make this process deterministic when the config asks for it. Returns whether it did."""
    if not getattr(cfg, "deterministic", False):
        return False
    import torch

    for key, value in CUBLAS_ENV.items():
        os.environ.setdefault(key, value)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    return True
