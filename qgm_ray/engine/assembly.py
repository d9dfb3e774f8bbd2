"""A block from a Config: the clients holding these shards, built the same way by every engine.

Planning and the objects a run needs (model, algorithm, partition) come from qgm_ray.build,
one layer down; this module adds what only the engine knows: how a block packs its clients
(engine/block.py) and how many rows it steps at once (engine/memory.py).
"""
from __future__ import annotations

import torch

from qgm_ray import build
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.block import Block, should_pack
from qgm_ray.engine.choco import Choco
from qgm_ray.engine.kernels import choose as choose_kernels
from qgm_ray.engine.host_heap import heap_for_big_tensors
from qgm_ray.engine.memory import auto_chunk


def build_block(cfg: Config, ds: Dataset, parts: list, slots: list[int], device: str, gpu_share: float = 1.0,
                heap_for_big: bool = False):
    """The block of the clients holding these shards (slots), in this order, on `device`;
    packed per `compute.pack_clients` and the device (engine.block.should_pack), with the kernels
    of `compute.kernels` (engine/kernels.py); with
    push-sum weights on a directed graph (all-reduce rules ignore the graph); stepping its
    rows in chunks per `compute.vmap_chunk` (auto: what fits in `gpu_share` of a GPU, engine/memory.py);
    with zero public copies where the run compresses its exchange (engine/choco.py).
    heap_for_big: a CPU block moves this process's big allocations to the heap
    (engine/host_heap.py; the local engine asks for it)."""
    model = build.build_model(cfg, ds)
    num_params = sum(p.numel() for p in model.parameters())
    shards = []
    for s in slots:
        idx = torch.as_tensor(parts[s], dtype=torch.long)
        shards.append((ds.train_x[idx], ds.train_y[idx]))
    augment = ds.augment if cfg.data.augment else None
    algorithm = build.build_algorithm(cfg)
    packed = should_pack(cfg.compute.pack_clients, len(slots), num_params, device)
    kernels = choose_kernels(cfg.compute.kernels, model, tuple(ds.train_x.shape[1:]), device, packed)
    block = Block(model, algorithm, shards, list(slots), batch_size=cfg.data.batch_size, seed=cfg.seed,
                  augment=augment, device=device, norm=ds.norm, fill=ds.fill, packed=packed,
                  push_sum=build.uses_push_sum(cfg, algorithm), kernels=kernels)
    if cfg.compression.op != "none":   # CHOCO's public copies, per client row (engine/choco.py)
        block.exchange_state = Choco.fresh_state(block.k, block.payload_size, block.params.dtype, block.device)
    chunk = cfg.compute.vmap_chunk   # after the exchange state: the memory plan counts it
    block.chunk = auto_chunk(block, gpu_share, log=print) if chunk == "auto" else min(int(chunk), block.k)
    if heap_for_big:
        heap_for_big_tensors(block)
    return block
