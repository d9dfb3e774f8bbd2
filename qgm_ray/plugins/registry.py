"""The registry of every kind of plug-in: a config name, a registered name, an installed
distribution's entry point or a `"package.module:attr"` reference, resolved to its factory, and
a factory's options checked against its signature (qgm_ray/plugins/__init__.py tells the whole).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, Callable, Iterable

from qgm_ray.errors import ConfigError, first_line

# kind -> the config key that names it
KEYS = {"algorithm": "algorithm.name", "model": "model.name", "data": "data.name", "topology": "topology.name",
        "compressor": "compression.op"}
# kind -> the entry-point group in which an installed distribution names its plug-ins
GROUPS = {"algorithm": "qgm_ray.algorithms", "model": "qgm_ray.models", "data": "qgm_ray.datasets",
          "topology": "qgm_ray.graphs", "compressor": "qgm_ray.compressors"}
# Filled by the modules of each kind when they are imported (algorithms.registry, models,
# data, topology, compression.registry, which import this module, never the other way round).
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KEYS}
# kind -> {short name: (reference, distribution) for each entry point of that name}: read
# from the installed distributions' metadata once per process, on first need.
_INSTALLED: dict[str, dict[str, list[tuple[str, str]]]] | None = None


def register(kind: str, name: str, factory: Any) -> Any:
    """Make `name` a valid value of `<kind>.name` in this process. Returns the factory. Names
    with ':' are references, never registered names. (Other processes of a Ray run know only
    what their imports register: user code is named by reference, which every process imports.)
    A factory given as a `"package.module:attr"` string is imported when it is first resolved:
    a built-in whose module imports torch registers without it, and validating a config that
    names it loads no torch."""
    if kind not in KEYS:
        raise ValueError(f"register: kind must be one of {', '.join(KEYS)}, got {kind!r}")
    if ":" in name:
        raise ValueError(f"register: {name!r} contains ':', which marks a module:attr reference")
    _REGISTRY[kind][name] = factory
    return factory


def builtin_names(kind: str) -> tuple[str, ...]:
    """The names registered for `kind` so far (all built-ins once its module is imported)."""
    return tuple(_REGISTRY[kind])


def is_reference(name: Any) -> bool:
    """`"package.module:attr"`: user code, not a registered name."""
    return isinstance(name, str) and ":" in name


def _installed() -> dict[str, dict[str, list[tuple[str, str]]]]:
    global _INSTALLED
    if _INSTALLED is None:
        from importlib.metadata import distributions

        found: dict[str, dict[str, list[tuple[str, str]]]] = {kind: {} for kind in GROUPS}
        kind_of = {group: kind for kind, group in GROUPS.items()}
        seen = set()
        for dist in distributions():
            # The same distribution on two sys.path entries: the first one is what imports.
            dist_name = dist.metadata["Name"] or "?"
            normal = re.sub(r"[-_.]+", "-", dist_name).lower()
            if normal in seen:
                continue
            seen.add(normal)
            for ep in dist.entry_points:
                kind = kind_of.get(ep.group)
                # a name with ':' would read as a reference; the attribute is required
                if kind is None or is_reference(ep.name) or not ep.attr:
                    continue
                ref = f"{ep.module}:{ep.attr}"
                if (ref, dist_name) not in found[kind].setdefault(ep.name, []):
                    found[kind][ep.name].append((ref, dist_name))
        _INSTALLED = found
    return _INSTALLED


def installed_names(kind: str) -> tuple[str, ...]:
    """The short names installed distributions add for `kind` (entry-point group GROUPS[kind]);
    a built-in name stays the built-in's, so it is not among them."""
    return tuple(sorted(n for n in _installed().get(kind, {}) if n not in _REGISTRY[kind]))


def names(kind: str) -> tuple[str, ...]:
    """Every short name `kind` takes: the registered ones, then the installed plug-ins'."""
    return builtin_names(kind) + installed_names(kind)


def installed_reference(kind: str, name: str, key: str | None = None) -> str | None:
    """The `module:attr` an installed distribution names `name` for `kind`, or None. Two
    distributions naming different code with one name is a ConfigError: neither is chosen."""
    if kind not in GROUPS or name in _REGISTRY[kind] or is_reference(name):
        return None
    entries = _installed()[kind].get(name, [])
    refs = sorted({ref for ref, _ in entries})
    if len(refs) > 1:
        both = ", ".join(f"{dist} ({ref})" for ref, dist in sorted(entries))
        raise ConfigError(f"{key or KEYS[kind]}={name!r} is an entry point of several installed distributions: "
                          f"{both}; name the one you mean by its reference 'package.module:attr'")
    return refs[0] if refs else None


def canonical(kind: str, name: Any, key: str | None = None) -> Any:
    """`name` as a run holds it: an installed plug-in's short name becomes the reference its
    entry point holds, so the run, its config.yaml and every Ray process treat it as the user
    code it is (its contract checks, its options checked against its signature); anything else
    is returned unchanged (an unknown name is check_name's to refuse)."""
    if not isinstance(name, str) or is_reference(name) or name in _REGISTRY[kind]:
        return name
    return installed_reference(kind, name, key) or name


def check_name(kind: str, name: str, key: str | None = None) -> None:
    """ConfigError unless `name` is registered for `kind`, an installed plug-in's short name or a
    reference (imported nothing)."""
    key = key or KEYS[kind]
    if not is_reference(name) and name not in _REGISTRY[kind] and installed_reference(kind, name, key) is None:
        raise ConfigError(f"{key}={name!r} is unknown; choose one of {', '.join(names(kind))}, "
                          f"or a reference 'package.module:attr' to your own code")


def resolve(kind: str, name: str, key: str | None = None) -> Any:
    """The factory `name` stands for: a registered name, an installed plug-in's short name or
    an imported `module:attr`."""
    key = key or KEYS[kind]
    if is_reference(name):
        return import_reference(name, key)
    check_name(kind, name, key)
    if name not in _REGISTRY[kind]:
        return import_reference(installed_reference(kind, name, key), key)
    factory = _REGISTRY[kind][name]
    if isinstance(factory, str):   # a built-in registered by reference: imported now, once
        factory = _REGISTRY[kind][name] = import_reference(factory, key)
    return factory


def _split(ref: str, key: str) -> tuple[str, str]:
    module, _, attr = ref.partition(":")
    module, attr = module.strip(), attr.strip()
    if not module or not attr or ":" in attr:
        raise ConfigError(f"{key}={ref!r} is not a reference of the form 'package.module:attr'")
    return module, attr


def import_reference(ref: str, key: str) -> Any:
    """Import `package.module:attr` (attr may be dotted: `module:Class.factory`) from the
    working directory or PYTHONPATH."""
    module_name, attr = _split(ref, key)
    # `python main.py` puts the script's directory first on sys.path, not the working
    # directory; a reference is documented as found from the working directory.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):   # the module itself, not one it imports
            raise ConfigError(f"{key}={ref!r}: no module named {module_name!r} on the Python path "
                              f"(the working directory {cwd} or PYTHONPATH)") from None
        raise ConfigError(f"{key}={ref!r}: importing {module_name!r} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 - any error in the user's module is this key's problem
        raise ConfigError(f"{key}={ref!r}: importing {module_name!r} failed: "
                          f"{type(e).__name__}: {first_line(e)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}={ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def configured(cfg, kind: str) -> Any:
    """The name the config gives `kind` (the value at KEYS[kind]); None when the config has
    no such section."""
    section, _, field = KEYS[kind].partition(".")
    return getattr(getattr(cfg, section, None), field, None)


def references(cfg) -> dict[str, str]:
    """{config key: reference} for every plug-in the config names (tune grids included)."""
    out = {}
    for kind, key in KEYS.items():
        name = configured(cfg, kind)
        if is_reference(name):
            out[key] = name
    for key, values in getattr(cfg.tune, "grid", {}).items():
        if key in KEYS.values():
            for i, v in enumerate(values):
                if is_reference(v):
                    out[f"tune.grid.{key}[{i}]"] = v
    return out


def signature_options(fn: Callable, skip: int) -> tuple[tuple[str, ...], bool]:
    """(keyword options `fn` takes after its first `skip` positional parameters, whether it
    takes **kwargs): how a factory's options are checked before it is called."""
    import inspect
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return (), True
    names, var_kw = [], False
    positional = 0
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            var_kw = True
        elif p.kind == p.VAR_POSITIONAL:
            continue
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and positional < skip:
            positional += 1
        elif p.kind != p.POSITIONAL_ONLY:
            names.append(p.name)
    return tuple(names), var_kw


def check_options(section: str, name: str, fn: Callable, skip: int, options: dict,
                  reserved: Iterable[str] = ()) -> None:
    """Every `<section>.options` key must be a keyword parameter of `fn` (unless it takes
    **kwargs) or one of the `reserved` options qgm-ray itself reads."""
    names, var_kw = signature_options(fn, skip)
    if var_kw:
        return
    unknown = sorted(set(options) - set(names) - set(reserved))
    if unknown:
        allowed = ", ".join(list(names) + list(reserved)) or "none"
        raise ConfigError(f"{section}.options.{unknown[0]} is not an option of {section}.name={name!r} "
                          f"(allowed: {allowed})")
