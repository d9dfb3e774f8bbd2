"""The user's text as values: a YAML config file, a `--set KEY=VALUE` override; anything wrong
with either is one ConfigError line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from qgm_ray import yaml_io
from qgm_ray.errors import ConfigError


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=VALUE` -> ("a.b", yaml-parsed VALUE)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set data.alpha=1.0")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml_io.loads(raw, f"--set {key}") if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e.problem})") from None
    return key, value


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict; anything wrong with the file is one ConfigError line
    naming the file (and, for YAML syntax, the line and column), never a traceback. A pipe or
    /dev/null is read like a file (empty: the built-in defaults), so `--config <(...)` works."""
    p = Path(path)
    where = f"--config {p}"
    if p.is_dir():
        raise ConfigError(f"{where}: is a directory, not a YAML file")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file {str(p)!r}") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if b"\0" in raw:
            raise ConfigError(f"{where}: a binary file, not YAML text") from None
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
                          f"save it as UTF-8") from None
    try:
        data = yaml_io.loads(text, where)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_reason(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping of keys")
    return data


def _yaml_reason(e: "yaml.YAMLError") -> str:
    """PyYAML's 4-7 lines (context, marks, a caret drawing) as: line L, column C: reason."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem, context = getattr(e, "problem", None), getattr(e, "context", None)
    reason = f"{problem} ({context})" if problem and context else problem or context
    reason = reason or (str(e).splitlines() or [type(e).__name__])[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {reason}" if mark is not None else reason
