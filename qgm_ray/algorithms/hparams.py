"""A rule's hyper-parameters checked: the knobs shared by every rule and the config keys that are
none, the type of each value against its default, the range checks a rule (a plug-in too) names
in its `checks`, and `resolve_hparams`, which turns what the config gives into `Algorithm.hparams`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from qgm_ray.errors import ConfigError

# The knobs every rule may read from the top-level `algorithm.<key>` config keys (one config
# serves every rule, and a Tune grid over `algorithm.name` compares them at equal settings).
# A rule that reads one declares it in `defaults` with its own default, which applies where
# the user leaves the key unset; SHARED_CHECKS (below) holds each one's range check.
# A rule's other knobs are its own: declared in `defaults`, set with `algorithm.options`.
SHARED = ("momentum", "weight_decay", "qgm_beta", "betas", "eps", "nesterov", "normalization_eps",
          "qgm_local_step")
# Config keys of `algorithm` that are not knobs of a rule: `lr` is passed to every call.
RESERVED = ("name", "lr", "options", "slowmo_tau", "slowmo_beta", "slowmo_alpha")


def _merged(cls, attr: str) -> dict:
    out: dict = {}
    for klass in reversed(cls.__mro__):
        out.update(vars(klass).get(attr, {}) or {})
    return out


# Range checks a rule can name in its `checks` (plug-ins too). Each takes (label, value) and
# returns the value unchanged: the type was checked against the default before, and an
# integer knob stays an integer.

def _real(key: str, value: Any) -> Any:
    # bool is an int subclass; `momentum: true` in YAML is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be finite, got {value!r}")
    return value


def unit_interval(key: str, value: Any) -> Any:
    value = _real(key, value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key} must be in [0, 1), got {value!r}")
    return value


def non_negative(key: str, value: Any) -> Any:
    value = _real(key, value)
    if value < 0.0:
        raise ConfigError(f"{key} must be >= 0, got {value!r}")
    return value


def positive(key: str, value: Any) -> Any:
    value = _real(key, value)
    if value <= 0.0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")
    return value


def positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")
    return value


def pair_in_unit_interval(key: str, value: Any) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"{key} must be two numbers in [0, 1), got {value!r}")
    return tuple(unit_interval(f"{key}[{i}]", v) for i, v in enumerate(value))


# The range of each shared knob, the one place it is written: a value the user sets is checked
# whichever rule runs (a sweep over algorithm.name carries it to rules that ignore it), and a
# rule reading the knob gets it checked again with its own `checks`, if it declares any.
SHARED_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "momentum": unit_interval, "weight_decay": non_negative, "qgm_beta": unit_interval,
    "betas": pair_in_unit_interval, "eps": positive, "normalization_eps": positive,
    "qgm_local_step": positive_int,
}


def check_shared(values: dict[str, Any]) -> None:
    """Range-check the shared knobs the user set (`algorithm.<key>`, None: unset)."""
    for key, value in values.items():
        if value is not None and key in SHARED_CHECKS:
            SHARED_CHECKS[key](f"algorithm.{key}", value)


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (tuple, list)):
        return f"a list of {len(default)} values"
    if isinstance(default, dict):
        return "a mapping"
    return type(default).__name__


def check_type(label: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (a float knob takes ints; a tuple knob a list of the
    same length, element by element), or a one-line ConfigError naming `label`."""
    def bad() -> ConfigError:
        return ConfigError(f"{label} must be {_type_name(default)} (the type of its default "
                           f"{default!r}), got {value!r}")
    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(float(value)):
            raise ConfigError(f"{label} must be finite, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(default, (tuple, list)):
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise bad()
        items = [check_type(f"{label}[{i}]", v, d) for i, (v, d) in enumerate(zip(value, default))]
        return tuple(items) if isinstance(default, tuple) else items
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if not isinstance(value, type(default)):
        raise bad()
    return value


def check_knobs(cls) -> dict[str, Any]:
    """The rule's knobs; a knob named like a config key that is not one (lr, name, ...) is a
    ConfigError: the rule would never see the value the user set."""
    knobs = cls.knobs()
    clash = sorted(set(knobs) & set(RESERVED))
    if clash:
        raise ConfigError(f"rule {cls.__qualname__} declares {clash[0]!r} in `defaults`, but algorithm.{clash[0]} "
                          f"is not a knob of a rule ({'the lr is passed to pre_mix / post_mix' if clash[0] == 'lr' else 'qgm-ray reads it'}); "
                          f"rename the knob")
    return knobs


def resolve_hparams(cls, name: str, given: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Defaults of rule class `cls`, overridden by `given`, type- and range-checked.

    A key the rule does not declare is a ConfigError: passing `nesterov` to `dsgd` or
    `qgm_beta` to `dsgdm_n` would otherwise be silently ignored and the run would not be
    what was asked. `labels`: how to name a key in a message (default: "algorithm
    hyper-parameter 'key'")."""
    knobs = check_knobs(cls)
    unknown = sorted(set(given) - set(knobs))
    if unknown:
        raise ConfigError(
            f"algorithm {name!r} does not accept hyper-parameter(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(knobs) or 'none'}"
        )
    labels = labels or {}
    checks = _merged(cls, "checks")
    resolved = {}
    for key, default in knobs.items():
        label = labels.get(key, f"algorithm hyper-parameter {key!r}")
        value = check_type(label, given[key], default) if key in given else default
        for check in (SHARED_CHECKS.get(key), checks.get(key)):
            if check is not None:
                value = check(label, value)
        resolved[key] = value
    return resolved
