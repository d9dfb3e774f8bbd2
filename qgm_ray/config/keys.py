"""`config --keys`: every key with its type, its default, its allowed values and the comment of
its field; the shared rule knobs with the named rule's defaults, and its own knobs."""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Optional

from qgm_ray import yaml_io
from qgm_ray.config.coerce import _type_name
from qgm_ray.config.schema import CHOICES, TUNE_METRICS, AlgorithmConfig, Config


def _field_comments(cls) -> dict:
    """{field: its trailing `# comment`} from the dataclass source: one place documents a key."""
    import inspect
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"^\s+(\w+):[^#]*#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _dynamic_choices() -> dict:
    import qgm_ray.algorithms.registry  # noqa: F401 - these imports register the built-in names
    import qgm_ray.compression.registry  # noqa: F401
    import qgm_ray.data  # noqa: F401
    import qgm_ray.models  # noqa: F401
    import qgm_ray.topology  # noqa: F401
    from qgm_ray.plugins import KEYS, names as plugin_names
    names = {key: plugin_names(kind) + ("package.module:attr",) for kind, key in KEYS.items()}
    return {**names, "compute.pack_clients": ("auto", "true", "false"), "tune.metric": TUNE_METRICS}


def _shared_names() -> tuple:
    from qgm_ray.algorithms.hparams import SHARED
    return SHARED


def _rule_rows(name: str) -> tuple[dict, list]:
    """For rule `name`: {algorithm.<shared key>: its default in this rule} and a row per knob of
    its own (`algorithm.options.<knob>`), so `config --keys` shows what the named rule runs with."""
    from qgm_ray.algorithms.hparams import SHARED
    from qgm_ray.algorithms.registry import algorithm_class

    knobs = algorithm_class(name).knobs()
    shared = {f"algorithm.{k}": v for k, v in knobs.items() if k in SHARED}
    own = [(f"algorithm.options.{k}", type(v).__name__, _flow(v), f"{name}'s own knob")
           for k, v in knobs.items() if k not in SHARED]
    return shared, own


def _flow(value: Any) -> str:
    return yaml_io.dumps(value, default_flow_style=True).strip().removesuffix("...").strip()


def describe_keys(algorithm: Optional[str] = None) -> str:
    """Every key: type, default, allowed values and the comment of its field (`main.py config --keys`).
    The shared rule knobs show the defaults of rule `algorithm` (default: the default rule's),
    and its own knobs are listed as `algorithm.options.<knob>`."""
    choices = {**CHOICES, **_dynamic_choices()}
    rule = algorithm or AlgorithmConfig.name
    rule_defaults, own_rows = _rule_rows(rule)
    rows = []

    def walk(cls, prefix: str) -> None:
        hints, notes = typing.get_type_hints(cls), _field_comments(cls)
        for f in dataclasses.fields(cls):
            key, tp = prefix + f.name, hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kind = " | ".join(_type_name(a) for a in typing.get_args(tp)) if typing.get_args(tp) else _type_name(tp)
            text = notes.get(f.name, "")
            if key in choices:
                listed = " | ".join(map(str, choices[key]))
                text = f"one of {', '.join(map(str, choices[key]))}" + (f"; {text}" if text and text != listed else "")
            shown = _flow(default)
            if key in rule_defaults:
                shown = _flow(rule_defaults[key])
                text = f"{text} (null: {rule}'s default {shown})"
            elif key.startswith("algorithm.") and f.name in _shared_names():
                text = f"{text} (not read by {rule})"
            rows.append((key, kind.replace("NoneType", "null"), shown, text))
            if key == "algorithm.options":
                rows.extend(own_rows)

    walk(Config, "")
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{'key':<{w[0]}}  {'type':<{w[1]}}  {'default':<{w[2]}}  allowed / meaning"]
    lines += [f"{k:<{w[0]}}  {t:<{w[1]}}  {d:<{w[2]}}  {x}".rstrip() for k, t, d, x in rows]
    return "\n".join(lines)
