"""Name -> compressor: the built-ins and `"package.module:Class"` references, through
`qgm_ray.plugins` like every other extension point.

The built-ins register by reference, so importing this module (as config validation does)
loads no torch; a compressor's module is imported when `make_compressor` first resolves it.
"""
from __future__ import annotations

import inspect
from typing import Any

from qgm_ray import plugins
from qgm_ray.errors import ConfigError, first_line

KIND = "compressor"
KEY = plugins.KEYS[KIND]

_BUILTINS = {
    "none": "qgm_ray.compression.base:NoCompression",
    "top_k": "qgm_ray.compression.sparse:TopK",
    "random_k": "qgm_ray.compression.sparse:RandomK",
    "qsgd": "qgm_ray.compression.quantize:QSGD",
    "sign": "qgm_ray.compression.quantize:ScaledSign",
}
for _name, _ref in _BUILTINS.items():
    plugins.register(KIND, _name, _ref)

COMPRESSORS: tuple[str, ...] = tuple(_BUILTINS)


def compressor_class(name: str) -> type:
    """The Compressor subclass `name` stands for (a registered name or a `module:Class`)."""
    from qgm_ray.compression.base import Compressor
    cls = plugins.resolve(KIND, name)
    if not (isinstance(cls, type) and issubclass(cls, Compressor)):
        what = f"the class {cls.__qualname__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
        raise ConfigError(f"{KEY}={name!r} is {what}, not a subclass of qgm_ray.compression.Compressor")
    return cls


def _parameters(cls: type) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]   # without self
    return [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def compressor_options(name: str) -> dict[str, Any]:
    """{option: its default, or inspect.Parameter.empty when it is required} of compressor
    `name`: the `compression.*` keys it reads."""
    return {p.name: p.default for p in _parameters(compressor_class(name))}


def make_compressor(name: str, **options: Any):
    """The compressor `name` with `options` (each a `compression.<option>` key). An option it
    does not take, a required one missing, or a bad value is a one-line ConfigError."""
    name = plugins.canonical(KIND, name)   # an installed plug-in's short name: its reference
    cls = compressor_class(name)
    own = compressor_options(name)
    for key in options:
        if key not in own:
            listed = ", ".join(own) or "none"
            raise ConfigError(f"compression.{key} is not an option of {KEY}={name!r} (its options: {listed})")
    for key, default in own.items():
        if default is inspect.Parameter.empty and key not in options:
            raise ConfigError(f"{KEY}={name!r} needs compression.{key}")
    try:
        compressor = cls(**options)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a plug-in's constructor: its error is this key's problem
        raise ConfigError(f"{KEY}={name!r}: {cls.__qualname__}(...) failed: {type(e).__name__}: {first_line(e)}") from None
    compressor.name = name
    return compressor
