"""A compressor tried on a small block before a run uses it: the package's contract checked
the way the exchange relies on it, so a plug-in that breaks it is one line naming
compression.op, not a wrong number many rounds later."""
from __future__ import annotations

import numpy as np
import torch

from qgm_ray.compression.registry import KEY
from qgm_ray.compression.stream import stream_keys
from qgm_ray.errors import ConfigError, first_line

TRIAL_ROWS, TRIAL_D = 3, 19   # a small block; d not a multiple of 8, so packing pads


def _trial_rows(d: int) -> torch.Tensor:
    rows = torch.randn(TRIAL_ROWS, d, generator=torch.Generator().manual_seed(0))
    rows[1] = 0.0   # a row of zeros: a norm or scale of 0 must not break decoding
    return rows


def check_compressor(compressor, d: int = TRIAL_D) -> None:
    """ConfigError (one line) unless on a (3, d) block: wire_bytes(d) is a non-negative int,
    encode gives a (3, wire_bytes(d)) uint8 numpy array, decode gives (3, d) float32, it
    equals compress bit for bit, and compress is the same on a second call (no hidden state)."""
    name = getattr(compressor, "name", "") or type(compressor).__name__
    where = f"{KEY}={name!r}"
    rows = _trial_rows(d)
    keys = stream_keys(0, range(TRIAL_ROWS), 0)
    step = "wire_bytes"
    try:
        size = compressor.wire_bytes(d)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ConfigError(f"{where}: wire_bytes({d}) must be a non-negative int, got {size!r}")
        step = "encode"
        wire = compressor.encode(rows.clone(), keys.clone())
        if not isinstance(wire, np.ndarray) or wire.dtype != np.uint8 or wire.shape != (TRIAL_ROWS, size):
            got = f"{wire.dtype} {wire.shape}" if isinstance(wire, np.ndarray) else type(wire).__name__
            raise ConfigError(f"{where}: encode of a ({TRIAL_ROWS}, {d}) block must be a uint8 numpy array of "
                              f"shape ({TRIAL_ROWS}, wire_bytes({d}) = {size}), got {got}")
        step = "decode"
        back = compressor.decode(wire.copy(), keys.clone(), d)
        step = "compress"
        q = compressor.compress(rows.clone(), keys.clone())
        again = compressor.compress(rows.clone(), keys.clone())
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: its error is this key's problem
        raise ConfigError(f"{where}: {step} on a ({TRIAL_ROWS}, {d}) block failed: "
                          f"{type(e).__name__}: {first_line(e)}") from None
    for label, t in (("decode", back), ("compress", q)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or tuple(t.shape) != (TRIAL_ROWS, d):
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"{where}: {label} must return a ({TRIAL_ROWS}, {d}) float32 tensor, got {got}")
    if not torch.equal(back.contiguous().view(torch.int32), q.contiguous().view(torch.int32)):
        raise ConfigError(f"{where}: decode(encode(rows)) differs from compress(rows); the receiver must "
                          f"rebuild exactly what the sender's compress gives")
    if not torch.equal(again.contiguous().view(torch.int32), q.contiguous().view(torch.int32)):
        raise ConfigError(f"{where}: compress gave two results for the same rows and keys; it must be a pure "
                          f"function of them (draw randomness from the keys: qgm_ray.compression.stream)")
