"""How many of a packed block's clients one vmapped forward/backward takes at once on a GPU.

A packed block's activations grow with k x batch: a vmap of a thousand ResNet-20 clients at
batch 32 needs more memory than one GPU has, while a few hundred already run near the
one-model ceiling (docs/results/bench/README.md, "GPU"). So a block whose step would not fit
computes its gradients in chunks of rows (`Block.chunk`); parameters, algorithm state and the
update rule stay one (k, P) block (a ResNet-20 client's rows and buffers are ~6 MB: a thousand
of them fit easily).

The chunk comes from a measurement, not a model of each layer: the block steps 1 and then 2
of its rows once on the GPU (a probe that changes nothing: cloned buffers, forked RNG, no
sampler draw) and reads the allocator's peak each time; the difference is one client's
activation memory, the rest a fixed overhead. The budget is this block's share of the GPU's
*total* memory (not the free memory of the moment, which differs between the processes of a
Ray run and the local engine and would give them different chunks, hence different sums).
"""
from __future__ import annotations

from typing import Callable

import torch


__all__ = ["CPU_CHUNK_SAMPLES", "MEMORY_FRACTION", "auto_chunk", "chunk_rows", "cuda_peak_of", "probe",
           "resident_bytes"]

# Of its share of the GPU a block plans to use this much; the rest is the CUDA context,
# allocator fragmentation, the evaluation model and the payload copies.
MEMORY_FRACTION = 0.85


def chunk_rows(k: int, budget: int, base: int, per_row: int) -> int:
    """The most rows (1..k) whose step fits: base + rows * per_row <= budget (bytes)."""
    if per_row <= 0:
        return k
    return int(max(1, min(k, (budget - base) // per_row)))


def probe(step_rows: Callable[[int], None], peak_of: Callable[[Callable[[], None]], int]) -> tuple[int, int]:
    """(fixed bytes, bytes per row) of a step, from the peak extra memory that
    `peak_of(fn)` reports for step_rows(1) and step_rows(2)."""
    one = peak_of(lambda: step_rows(1))
    two = peak_of(lambda: step_rows(2))
    per_row = max(0, two - one)
    return max(0, one - per_row), per_row


def cuda_peak_of(device) -> Callable[[Callable[[], None]], int]:
    """Peak bytes allocated on `device` while fn runs, above what was allocated before."""
    def peak_of(fn: Callable[[], None]) -> int:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return peak_of


def resident_bytes(*tensors) -> int:
    """Bytes held by these tensors (a block's rows, state, buffers, exchange state and data)."""
    total = 0
    for t in tensors:
        if isinstance(t, dict):
            total += resident_bytes(*t.values())
        elif isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


# On CPU a packed block steps at most this many samples (rows x batch) per vmapped call: the
# CPU is saturated long before one call takes every row, and the activations of thousands of
# clients in one call cost gigabytes per process while smaller calls stay in cache and run
# faster (docs/results/scale/README.md). Blocks of up to 256 clients at batch 32 (every run of
# the paper's size, the default run) step whole.
CPU_CHUNK_SAMPLES = 8192


def auto_chunk(block, gpu_share: float, log: Callable[[str], None] = lambda m: None) -> int:
    """`block.k` unless the block is packed and its whole step would not fit: on CUDA in
    gpu_share (0..1] of the GPU's memory (then the rows one vmapped step can take), on CPU in
    CPU_CHUNK_SAMPLES samples."""
    if not block.packed or block.k < 2:
        return block.k
    if block.device.type != "cuda":
        return max(1, min(block.k, CPU_CHUNK_SAMPLES // max(1, block.batch_size)))
    device = block.device
    total = torch.cuda.get_device_properties(device).total_memory
    budget = int(total * min(1.0, max(gpu_share, 1e-6)) * MEMORY_FRACTION)
    resident = resident_bytes(block.params, block.state, block.buffers, block.exchange_state, block.x, block.y)
    base, per_row = probe(block.probe_step, cuda_peak_of(device))
    chunk = chunk_rows(block.k, budget - resident, base, per_row)
    if chunk < block.k:
        log(f"block of {block.k} clients: one step needs ~{(base + block.k * per_row) / 2**30:.1f} GiB of "
            f"activations, this block's share of the GPU is {budget / 2**30:.1f} GiB: gradients in chunks of "
            f"{chunk} clients (compute.vmap_chunk sets it)")
    return chunk
