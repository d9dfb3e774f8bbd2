"""From a Config to the objects a run needs. Shared by every engine so they build the same things.

Everything here is deterministic in `cfg.seed`: the same config gives the same partition,
the same initial weights on every client and the same per-client sampling order, which is
what lets the Ray engine reproduce the local engine's numbers.
"""
from __future__ import annotations

import os

import torch

from qgm_ray.algorithms import make_algorithm_from_config
from qgm_ray.config import Config
from qgm_ray.data import Dataset, load_dataset
from qgm_ray.layout import max_clients
from qgm_ray.models import HUB_MODELS, make_model
from qgm_ray.partition import make_partition
from qgm_ray.topology import is_directed, make_topology


def resolve_device(cfg: Config) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def build_dataset(cfg: Config) -> Dataset:
    ds = load_dataset(cfg.data.name, root=cfg.data.root, download=cfg.data.download,
                      seed=cfg.data.seed, **cfg.data.options)
    if cfg.eval.max_test_samples and len(ds.test_x) > cfg.eval.max_test_samples:
        # A fixed, seeded subset: cheap evaluation for sweeps, identical across trials.
        g = torch.Generator().manual_seed(cfg.seed)
        keep = torch.randperm(len(ds.test_x), generator=g)[:cfg.eval.max_test_samples]
        ds.test_x, ds.test_y = ds.test_x[keep], ds.test_y[keep]
    return ds


def partition_slots(cfg: Config) -> int:
    """How many data shards to cut: max_clients when the run is elastic, else n_clients."""
    if cfg.elastic.max_clients is not None:
        return cfg.elastic.max_clients
    return max_clients(cfg)


def build_partition(cfg: Config, ds: Dataset) -> list:
    return make_partition(cfg.data.partition, ds.train_y.numpy(), partition_slots(cfg),
                          alpha=cfg.data.alpha, seed=cfg.seed, equal_size=cfg.data.equal_size)


def build_topology(cfg: Config, n_clients: int | None = None):
    n = cfg.topology.n_clients if n_clients is None else n_clients
    return make_topology(cfg.topology.name, n, seed=cfg.seed, **cfg.topology.options)


def build_algorithm(cfg: Config):
    algorithm = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
    return _with_slowmo(cfg, algorithm) if cfg.algorithm.slowmo_tau > 0 else algorithm


def _with_slowmo(cfg: Config, algorithm):
    """The rule with SlowMo's slow state and outer step (algorithms/slowmo.py)."""
    from qgm_ray.algorithms.slowmo import SlowMo
    a = cfg.algorithm
    return SlowMo(algorithm, a.slowmo_tau, a.slowmo_beta, a.slowmo_alpha)


def build_model(cfg: Config, ds: Dataset):
    # Same seed for every client: decentralized training starts from a common point.
    options = dict(cfg.model.options)
    if cfg.model.name in HUB_MODELS:
        # Hub weights are read from data.root's cache and fetched only when data.download asks.
        options.setdefault("download", cfg.data.download)
        options.setdefault("cache_dir", os.path.join(cfg.data.root, "hf"))
    return make_model(cfg.model.name, ds.input_shape, ds.num_classes, seed=cfg.seed, **options)


def uses_push_sum(cfg: Config, algorithm) -> bool:
    """Gossip with push-sum weights: on a directed graph, except for all-reduce rules (which
    ignore the graph)."""
    return is_directed(cfg.topology.name, cfg.topology.options, cfg.topology.n_clients, cfg.seed) and not algorithm.centralized


def payload_floats(cfg: Config, algorithm, num_params: int) -> int:
    """Floats one client sends per round (what engine.block.Block.payload_size says)."""
    return algorithm.payload_size(num_params) + (1 if uses_push_sum(cfg, algorithm) else 0)
