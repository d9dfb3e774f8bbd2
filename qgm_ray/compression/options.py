"""The compressors' option checks: torch-free, so config validation runs them without loading
torch (tests/test_config_import.py)."""
from __future__ import annotations

from qgm_ray.errors import ConfigError

SECTION = "compression"   # the config section whose keys a compressor's options are
MAX_LEVELS = 2 ** 24 - 1  # every level is an exact float32 integer


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_keep(keep) -> float:
    """The fraction of entries a sparsifier sends: a number in (0, 1]."""
    if not _number(keep) or not 0 < keep <= 1:
        raise ConfigError(f"{SECTION}.keep must be a number in (0, 1], got {keep!r}")
    return float(keep)


def check_levels(levels) -> int:
    """The number of nonzero quantization levels s: an integer in [1, 2**24 - 1]."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= MAX_LEVELS:
        raise ConfigError(f"{SECTION}.levels must be an integer in [1, {MAX_LEVELS}], got {levels!r}")
    return levels


def check_unbiased(unbiased) -> bool:
    if not isinstance(unbiased, bool):
        raise ConfigError(f"{SECTION}.unbiased must be true or false, got {unbiased!r}")
    return unbiased
