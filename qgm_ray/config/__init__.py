"""Typed run configuration: built-in defaults <- YAML file <- `--set a.b=VALUE` overrides.

Every key is a dataclass field, so an unknown key or a value of the wrong type is caught
here, before any data is loaded or any actor starts. Cross-field rules that need the data
(batch size vs. smallest client) live in `validate_against_data`.

This package holds the entry points (load_config, from_dict, dump_yaml). schema.py holds the
keys (the dataclasses) and their closed sets of values; read.py reads a YAML file's and an
override's text, layers.py layers defaults, file and overrides into a dict, moved.py reads
keys under their old names, coerce.py builds the dict into the dataclasses; checks.py is
`validate` (limits.py its bounds, needs.py what a rule or an exchange needs of a run,
tune_checks.py the `tune:` section); keys.py lists the keys (`config --keys`); refusal.py
words a refused value.
"""
from __future__ import annotations

from pathlib import Path

from qgm_ray import yaml_io
from qgm_ray.config.checks import COMPRESSION_CHECKS, dataset_options, validate, validate_against_data
from qgm_ray.config.coerce import _build
from qgm_ray.config.keys import describe_keys
from qgm_ray.config.layers import (
    _merge as _merge,   # the Python API layers its dicts with it
    apply_overrides,
    config_dict,
    get_dotted,
    layered,
    set_dotted,
    size_from_graph,
    trial_dict,
)
from qgm_ray.config.limits import (
    MAX_ELASTIC_STEPS,
    MAX_EPOCHS,
    MAX_EVALUATIONS,
    MAX_MILESTONES,
    MAX_NAME_LENGTH,
    MAX_SEED,
    MAX_TRIALS,
    NAME_PATTERN,
    POSITIVE_INT_DATA_OPTIONS,
)
from qgm_ray.config.moved import MOVED_KEYS, moved_nested, moved_values
from qgm_ray.config.needs import ASYNC_NEEDS, CHOCO_NEEDS, NEEDS, unmet_needs
from qgm_ray.config.read import parse_override, read_yaml
from qgm_ray.config.schema import (
    CHOICES,
    TUNE_METRICS,
    AlgorithmConfig,
    ClockConfig,
    ClockSpeedConfig,
    ClockStragglersConfig,
    CompressionConfig,
    ComputeConfig,
    Config,
    DataConfig,
    ElasticConfig,
    EvalConfig,
    FaultToleranceConfig,
    ModelConfig,
    RayConfig,
    ScheduleConfig,
    TopologyConfig,
    TrackingConfig,
    TrackingMlflowConfig,
    TrackingWandbConfig,
    TuneConfig,
)
from qgm_ray.errors import ConfigError

__all__ = [
    "ASYNC_NEEDS", "AlgorithmConfig", "CHOCO_NEEDS", "CHOICES", "COMPRESSION_CHECKS", "ClockConfig", "ClockSpeedConfig",
    "ClockStragglersConfig", "CompressionConfig", "ComputeConfig", "Config", "ConfigError", "DataConfig",
    "ElasticConfig", "EvalConfig", "FaultToleranceConfig", "MAX_ELASTIC_STEPS", "MAX_EPOCHS", "MAX_EVALUATIONS",
    "MAX_MILESTONES", "MAX_NAME_LENGTH", "MAX_SEED", "MAX_TRIALS", "MOVED_KEYS", "ModelConfig", "NAME_PATTERN",
    "NEEDS", "POSITIVE_INT_DATA_OPTIONS", "RayConfig", "ScheduleConfig", "TUNE_METRICS", "TopologyConfig",
    "TrackingConfig", "TrackingMlflowConfig", "TrackingWandbConfig", "TuneConfig", "apply_overrides",
    "config_dict", "dataset_options", "describe_keys", "dump_yaml", "from_dict", "get_dotted", "layered",
    "load_config", "moved_nested", "moved_values", "parse_override", "read_yaml", "set_dotted", "size_from_graph",
    "trial_dict", "unmet_needs", "validate", "validate_against_data",
]


def from_dict(d: dict) -> Config:
    cfg = _build(Config, moved_nested(d))
    _installed_plugins_by_reference(cfg)
    validate(cfg)
    return cfg


def _installed_plugins_by_reference(cfg: Config) -> None:
    """An installed distribution's short name (an entry point, plugins.GROUPS) becomes the
    `module:attr` it stands for, in each name and in a Tune grid over names: from here on it
    is user code like any reference, in this process and in every Ray process."""
    import qgm_ray.algorithms.registry  # noqa: F401 - these imports register the built-in names
    import qgm_ray.compression.registry  # noqa: F401
    import qgm_ray.data  # noqa: F401
    import qgm_ray.models  # noqa: F401
    import qgm_ray.topology  # noqa: F401
    from qgm_ray import plugins

    for kind, key in plugins.KEYS.items():
        name = plugins.configured(cfg, kind)
        if name is not None:
            section, _, field_name = key.partition(".")
            setattr(getattr(cfg, section), field_name, plugins.canonical(kind, name, key))
        values = cfg.tune.grid.get(key)
        if isinstance(values, list):   # a new dict: the caller's grid stays as given
            cfg.tune.grid = {**cfg.tune.grid, key: [plugins.canonical(kind, v, f"tune.grid.{key}") for v in values]}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    return from_dict(config_dict(path, overrides))


def dump_yaml(cfg: Config) -> str:
    return yaml_io.dumps(cfg.to_dict(), sort_keys=False)
