"""Before anything is written or any actor starts: the data loaded and partitioned, and every
check that can fail on it (the device, model options only the data's shape can check, the
plug-ins on a tiny batch); a wrong `ray.address` fails in seconds, before the data is made.
No side effects: each refusal is a ConfigError."""
from __future__ import annotations

import os
import sys

from qgm_ray import build, errors
from qgm_ray.config import Config, validate_against_data
from qgm_ray.errors import ConfigError


def prepare(cfg: Config, log=print):
    """Load data and cut the partition; raises ConfigError on anything wrong. No side effects."""
    import torch

    # Data preprocessing (standardisation) reduces over the whole dataset; its last bits depend
    # on the intra-op thread count. A Tune trial or Ray worker starts with OMP_NUM_THREADS=1, a
    # shell does not: the same thread count everywhere gives main.py and a Tune trial of one
    # config the same data, bit for bit.
    torch.set_num_threads(cfg.compute.torch_threads)
    check_device(cfg)
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    validate_against_data(cfg, [len(p) for p in parts])
    try:  # model options only the data's shape can check (one model, only when options are set
        # or the model is a plug-in, whose output must be an nn.Module before any actor starts)
        if cfg.model.options or ":" in cfg.model.name:
            build.build_model(cfg, ds)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any constructor error is a bad model.options
        raise ConfigError(f"model.name={cfg.model.name!r} with model.options={cfg.model.options}: "
                          f"{errors.described(e)}") from None
    from qgm_ray.contracts import check_plugins
    check_plugins(cfg, ds)   # each plug-in once on a tiny batch: its broken contract is one line
    log(f"data: {cfg.data.name} ({len(ds.train_x)} train / {len(ds.test_x)} test, "
        f"{ds.num_classes} classes), {cfg.data.partition} partition"
        + (f" alpha={cfg.data.alpha:g}" if cfg.data.partition == "dirichlet" else "")
        + f" over {len(parts)} clients, sizes {min(map(len, parts))}..{max(map(len, parts))}")
    return ds, parts


def _ray_initialized() -> bool:
    if "ray" not in sys.modules:  # importing Ray just to ask costs a second
        return False
    import ray
    return ray.is_initialized()


def check_ray_address(cfg: Config) -> None:
    """A Ray run's `ray.address`, probed unless this process is already in a Ray."""
    if cfg.backend == "ray":
        from qgm_ray.engine.ray_setup import probe_address, ray_address
        if ray_address(cfg) and not _ray_initialized():
            probe_address(ray_address(cfg))


def check_device(cfg: Config) -> None:
    """device=cuda where it can be known now (local engine, or a Ray this process starts)."""
    import torch
    if cfg.device != "cuda" or torch.cuda.is_available():
        return
    joins_cluster = cfg.backend == "ray" and (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    if not joins_cluster:  # a cluster's GPUs are checked when the engine plans its resources
        raise ConfigError("device=cuda but torch sees no CUDA GPU on this machine; use device=auto "
                          "(GPU when there is one) or device=cpu")
