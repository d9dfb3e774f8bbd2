"""The random numbers a compressor draws: counter-based and stateless.

A compressor's randomness is a pure function of a stream key and an entry index, so a replay, a
resume, the Ray engine and the local engine all draw the same numbers without storing any RNG
state. A key is a 32-bit integer held in int64; `stream_keys` derives one per client from
(run seed, client slot, round), and `entry_hashes(keys, d)` gives 32 random bits per
(key, entry).

The mixing function is a 32-bit integer hash (C. Wellons' "hash prospector" family: xor-shift,
multiply, xor-shift, multiply, xor-shift) whose two multipliers are below 2**31, so every
product of a 32-bit value stays below 2**63 and the whole hash runs in int64 on any device,
with no overflow and no unsigned types.
"""
from __future__ import annotations

from typing import Iterable

import torch

MASK32 = 0xFFFFFFFF
_MUL1, _MUL2 = 0x21F0AAAD, 0x735A2D97
# Odd constants that separate the hash's inputs (seed, slot, round, entry) so that no two of
# them start from the same value; hash32(0) is 0.
_SEED_SALT, _ENTRY_SALT = 0x9E3779B9, 0x85EBCA6B
UNIFORM_BITS = 24   # a float32 in [0, 1) holds exactly 24 random bits


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2**32) onto itself, elementwise over an int64 tensor."""
    x = x ^ (x >> 16)
    x = (x * _MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL2) & MASK32
    return x ^ (x >> 15)


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
    slots = torch.as_tensor(slots, dtype=torch.int64).reshape(-1)
    if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) > MASK32):
        raise ValueError("stream_keys: client slots must be integers in [0, 2**32)")
    base = hash32(torch.tensor((seed & MASK32) ^ _SEED_SALT, dtype=torch.int64))
    return hash32(hash32(base ^ slots) ^ t)


def entry_hashes(keys: torch.Tensor, d: int) -> torch.Tensor:
    """(k, d) int64 in [0, 2**32): 32 random bits for every (key, entry index), on keys' device."""
    keys = keys.to(torch.int64).reshape(-1, 1) & MASK32
    entries = hash32(torch.arange(d, dtype=torch.int64, device=keys.device) ^ _ENTRY_SALT)
    return hash32(keys ^ entries)


def uniforms(keys: torch.Tensor, d: int) -> torch.Tensor:
    """(k, d) float32 uniform on [0, 1) in steps of 2**-24, exactly (the top 24 hash bits)."""
    top = entry_hashes(keys, d) >> (32 - UNIFORM_BITS)
    return top.to(torch.float32) * (2.0 ** -UNIFORM_BITS)
