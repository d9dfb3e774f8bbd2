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


# --------------------------------------------------------------------------- CPU blocks' allocations

# glibc serves an allocation above its mmap threshold (128 KB, rising to the largest freed,
# at most 32 MB) with a fresh mmap and unmaps it on free, and trims the heap's top above
# twice that threshold, so such a tensor faults in again, 4 KB at a time, every time it is
# made. Every round makes a dozen of a packed CPU block's (k, P) tensors (gathers, the rule's
# arithmetic, the mixing), above that threshold from a few clients up, and frees them at the
# heap's top: taking big tensors from the heap and keeping freed memory for reuse saves those
# faults' system time, a share of every round that grows with the block (several times the
# arithmetic past 32 MB a tensor), for a somewhat higher peak RSS. Arithmetic is unchanged:
# only where the bytes live. Only the local engine switches: in the Ray engine's ClientActors
# the heap grows far more, and a run of 16,384 clients on Ray is meant to fit 8 GB on a small
# machine. Transparent huge pages are not used: the kernel's compaction stalls cost more than
# they save at that scale. The measurements behind each choice: docs/results/scale/README.md.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4       # glibc's mallopt parameters (malloc.h)
_HEAP_KEPT = 2**31 - 1                        # keep up to 2 GB of freed heap for reuse
_heap_mode = False


def heap_for_big_tensors(block, log: Callable[[str], None] = lambda m: None) -> bool:
    """Switch this process's glibc malloc to the heap for big allocations (no mmap, no trim
    below 2 GB) when `block` is a CPU block; once per process. False where nothing changed
    (a GPU block, no glibc)."""
    global _heap_mode
    if _heap_mode or block.device.type != "cpu":
        return _heap_mode
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl, macOS): leave it
        return False
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _HEAP_KEPT) != 1:
        return False
    _heap_mode = True
    log(f"block of {block.k} clients: {block.params.numel() * 4 / 2**20:.0f} MB a (k, P) tensor; this "
        "process now allocates big tensors on the heap and keeps freed memory for reuse (engine/memory.py)")
    return True


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc malloc_trim(0), which also returns
    free pages inside the heap) where heap_for_big_tensors switched this process. Called before
    an evaluation or a checkpoint: what the rounds keep for reuse would otherwise sit under
    those phases' own allocations; the next round faults it in once."""
    if _heap_mode:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
