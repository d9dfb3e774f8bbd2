"""How a refused value reads: one ConfigError line (`_require`), a huge value named by its size
instead of printed whole (`_short`)."""
from __future__ import annotations

from typing import Any

from qgm_ray.errors import ConfigError


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: a message names a huge value without printing it."""
    if isinstance(value, (list, dict, tuple)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value):,} entries"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)
