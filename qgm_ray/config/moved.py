"""Keys that moved to another section (MOVED_KEYS): read under their old name wherever a key is
written, with one notice per key per process."""
from __future__ import annotations

import sys
from typing import Any

from qgm_ray.config.refusal import _short
from qgm_ray.errors import ConfigError


# Keys that moved to another section: {old dotted key: new dotted key}. The old name is still
# read wherever a key can be written (a file, --set, an API dict, a Tune grid or search), so
# the config.yaml of an older run directory still resumes; one line per key per process
# names the new name.
MOVED_KEYS = {f"ray.{key}": f"compute.{key}" for key in ("torch_threads", "pack_clients", "vmap_chunk")}
_told_moved: set = set()


def _tell_moved(old: str) -> None:
    if old in _told_moved:
        return
    _told_moved.add(old)
    try:
        print(f"{old} is now {MOVED_KEYS[old]}; read as such", file=sys.stderr, flush=True)
    except (OSError, ValueError):   # a notice never stops a run whose stderr is gone
        pass


def _refuse_both(old: str, value: Any, other: Any) -> None:
    if value != other:
        new = MOVED_KEYS[old]
        raise ConfigError(f"{old}={_short(value)} and {new}={_short(other)} set one key under its old and "
                          f"new name; keep only {new}")


def moved_values(values: dict) -> dict:
    """{dotted key: value} overrides with each old key (MOVED_KEYS) under its new name; a whole
    `ray` mapping gives up its moved keys to `compute.<key>`."""
    if not isinstance(values, dict):
        return values
    out: dict = {}
    moved = []
    for key, value in values.items():
        if key in MOVED_KEYS:
            moved.append((key, value))
        elif key == "ray" and isinstance(value, dict) and any(f"ray.{k}" in MOVED_KEYS for k in value):
            out[key] = {k: v for k, v in value.items() if f"ray.{k}" not in MOVED_KEYS}
            moved += [(f"ray.{k}", v) for k, v in value.items() if f"ray.{k}" in MOVED_KEYS]
        else:
            out[key] = value
    for old, value in moved:
        new = MOVED_KEYS[old]
        section, name = new.split(".", 1)
        if new in out:
            _refuse_both(old, value, out[new])
        if isinstance(out.get(section), dict) and name in out[section]:
            _refuse_both(old, value, out[section][name])
        _tell_moved(old)
        out[new] = value
    return out


def moved_nested(d: dict) -> dict:
    """A nested config dict (a file's, an API dict, a run's config.yaml) with each old key
    (MOVED_KEYS) in its new section, and a Tune grid's or search's old keys renamed."""
    if not isinstance(d, dict):
        return d
    out = dict(d)
    ray, compute = out.get("ray"), out.get("compute")
    olds = [f"ray.{k}" for k in ray if f"ray.{k}" in MOVED_KEYS] if isinstance(ray, dict) else []
    if olds and (compute is None or isinstance(compute, dict)):   # else _build names the bad section
        ray, compute = dict(ray), dict(compute or {})
        for old in olds:
            name = MOVED_KEYS[old].split(".", 1)[1]
            value = ray.pop(old.split(".", 1)[1])
            if name in compute:
                _refuse_both(old, value, compute[name])
            _tell_moved(old)
            compute[name] = value
        out["ray"], out["compute"] = ray, compute
    tune = out.get("tune")
    if isinstance(tune, dict):
        for section in ("grid", "search"):
            keys = tune.get(section)
            if isinstance(keys, dict) and any(k in MOVED_KEYS for k in keys):
                out["tune"] = tune = {**tune, section: moved_values(keys)}
    return out
