"""How a payload travels between processes and how many bytes it is (`Wire`); an uncompressed
run's wire is `FLOAT32` (`wire_of`), a compressed run's exchange carries its own (engine/choco.py
`ChocoWire`, chosen in engine/stage.py). The exchange stage (engine/exchange.py) holds one.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch


class Wire:
    """The wire format of a payload: P float32 values, one contiguous array per payload row.

    `nbytes` is the one place that says how many bytes a payload of P floats is; `encode` is
    what a block puts in the object store for the rows other blocks read, `decode` what a
    block mixes from what it received."""
    name = "float32"
    BYTES_PER_FLOAT = 4

    def nbytes(self, payload_floats: int) -> int:
        return int(payload_floats) * self.BYTES_PER_FLOAT

    def host(self, rows: torch.Tensor) -> np.ndarray:
        """(r, D) payload rows as one (r, D) float32 array in host memory (one device->host copy)."""
        return rows.detach().to("cpu", torch.float32).numpy()

    def encode(self, rows: torch.Tensor) -> list[np.ndarray]:
        """(r, D) payload rows -> r arrays, what goes in the object store."""
        return [np.ascontiguousarray(row) for row in self.host(rows)]

    def decode(self, arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Received payloads -> tensors `block_mix` reads, zero-copy over the arrays. Arrays
        from the object store are read-only and mixing only reads them, so torch's
        not-writable warning is noise."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return [torch.from_numpy(a) for a in arrays]


FLOAT32 = Wire()


def wire_of(cfg) -> Wire:
    """The wire format of an uncompressed run's payloads (P float32 values), for every engine
    and actor. A compressed run's exchange carries its own wire (engine/choco.py `ChocoWire`,
    chosen in engine/stage.py)."""
    return FLOAT32
