"""A nested dict built into the typed dataclasses (schema.py): each value checked against its
field's annotation, an unknown key or a value of the wrong type one ConfigError line naming
the dotted key."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from qgm_ray.config.refusal import _short
from qgm_ray.errors import ConfigError


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(key: str, value: Any, tp) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                errors.append(_type_name(arg))
        raise ConfigError(f"{key}: expected one of {', '.join(errors)}, got {_short(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {_short(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        number = float(value)
        # .inf / .nan are valid YAML numbers but no setting of this project means them.
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {_short(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_short(value)}")
    if tp is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{key}: expected a list, got {_short(value)}")
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {_short(value)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise TypeError(f"unsupported annotation {tp} for {key}")


def _build(cls, data: Any, prefix: str = ""):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {full!r}; allowed keys{' in ' + prefix if prefix else ''}: {', '.join(names)}")
        kwargs[key] = _coerce(full, value, hints[key])
    return cls(**kwargs)
