"""The random numbers a compressor draws: counter-based and stateless.

A compressor's randomness is a pure function of a stream key and an entry index, so a replay, a
resume, the Ray engine and the local engine all draw the same numbers without storing any RNG
state. A key is a 32-bit integer (held in int64 where it is a tensor); `stream_keys` derives
one per client from (run seed, client slot, round), and `entry_hashes(keys, d)` gives 32
random bits per (key, entry).

The mixing function is a 32-bit integer hash (C. Wellons' "hash prospector" family: xor-shift,
multiply, xor-shift, multiply, xor-shift), computed on numpy uint32 arrays, whose products wrap
modulo 2**32 by definition: nothing overflows, and the same bits come out on every machine.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
_MUL1, _MUL2 = np.uint32(0x21F0AAAD), np.uint32(0x735A2D97)
# Odd constants that separate the hash's inputs (seed, slot, round, entry) so that no two of
# them start from the same value; hash32(0) is 0.
_SEED_SALT, _ENTRY_SALT = 0x9E3779B9, 0x85EBCA6B
UNIFORM_BITS = 24   # a float32 in [0, 1) holds exactly 24 random bits


def _mix(x: np.ndarray) -> np.ndarray:
    """hash32 of a uint32 array, in place (one scratch array: a block's (k, d) is large)."""
    scratch = np.empty_like(x)
    for shift, multiplier in ((16, _MUL1), (15, _MUL2), (15, None)):
        np.right_shift(x, shift, out=scratch)
        x ^= scratch
        if multiplier is not None:
            x *= multiplier
    return x


def hash32(x) -> np.ndarray:
    """A bijection of [0, 2**32) onto itself, elementwise: uint32 in, uint32 out."""
    return _mix(np.array(x, dtype=np.uint32))


def _u32(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MASK32:
        raise ValueError(f"stream_keys: {name} must be an integer in [0, 2**32), got {value!r}")
    return value


def stream_keys(seed: int, slots: Iterable[int] | torch.Tensor, t: int) -> torch.Tensor:
    """(k,) int64 keys in [0, 2**32), one per client slot, for round `t` of a run seeded `seed`.
    The seed is taken modulo 2**32. The keys are on the CPU (move them where the rows are)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"stream_keys: seed must be an integer, got {seed!r}")
    t = _u32("the round t", t)
    slots = torch.as_tensor(slots, dtype=torch.int64).reshape(-1).numpy()
    if slots.size and (slots.min() < 0 or slots.max() > MASK32):
        raise ValueError("stream_keys: client slots must be integers in [0, 2**32)")
    base = hash32((seed & MASK32) ^ _SEED_SALT)
    keys = hash32(hash32(base ^ slots.astype(np.uint32)) ^ np.uint32(t))
    return torch.from_numpy(keys.astype(np.int64))


def _keys_u32(keys) -> np.ndarray:
    keys = keys.detach().cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    return (keys.astype(np.int64).reshape(-1) & MASK32).astype(np.uint32)


def entry_hashes(keys, d: int) -> np.ndarray:
    """(k, d) uint32: 32 random bits for every (key, entry index). keys: (k,) integers."""
    entries = hash32(np.arange(d, dtype=np.uint32) ^ np.uint32(_ENTRY_SALT))
    return _mix(_keys_u32(keys)[:, None] ^ entries[None, :])


def uniforms(keys, d: int) -> np.ndarray:
    """(k, d) float32 uniform on [0, 1) in steps of 2**-24, exactly (the top 24 hash bits)."""
    top = entry_hashes(keys, d)
    top >>= 32 - UNIFORM_BITS
    out = top.astype(np.float32)
    out *= np.float32(2.0 ** -UNIFORM_BITS)
    return out
