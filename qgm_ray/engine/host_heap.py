"""Where a CPU block's big tensors live: on glibc's heap, freed memory kept for reuse.

glibc serves an allocation above its mmap threshold (128 KB, rising to the largest freed,
at most 32 MB) with a fresh mmap and unmaps it on free, and trims the heap's top above
twice that threshold, so such a tensor faults in again, 4 KB at a time, every time it is
made. Every round makes a dozen of a packed CPU block's (k, P) tensors (gathers, the rule's
arithmetic, the mixing), above that threshold from a few clients up, and frees them at the
heap's top: taking big tensors from the heap and keeping freed memory for reuse saves those
faults' system time, a share of every round that grows with the block (several times the
arithmetic past 32 MB a tensor), for a somewhat higher peak RSS. Arithmetic is unchanged:
only where the bytes live. Only the local engine switches: in the Ray engine's ClientActors
the heap grows far more, and a run of 16,384 clients on Ray is meant to fit 8 GB on a small
machine. Transparent huge pages are not used: the kernel's compaction stalls cost more than
they save at that scale. The measurements behind each choice: docs/results/scale/README.md
(big blocks) and docs/results/bench/README.md (every block size, the Ray actors tried).
"""
from __future__ import annotations

from typing import Callable

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
        "process now allocates big tensors on the heap and keeps freed memory for reuse (engine/host_heap.py)")
    return True


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc malloc_trim(0), which also returns
    free pages inside the heap) where heap_for_big_tensors switched this process. Called before
    an evaluation or a checkpoint: what the rounds keep for reuse would otherwise sit under
    those phases' own allocations; the next round faults it in once."""
    if _heap_mode:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
