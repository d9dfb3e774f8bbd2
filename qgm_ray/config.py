"""Typed run configuration: built-in defaults <- YAML file <- `--set a.b=VALUE` overrides.

Every key is a dataclass field, so an unknown key or a value of the wrong type is caught
here, before any data is loaded or any actor starts. Cross-field rules that need the data
(batch size vs. smallest client) live in `validate_against_data`.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from qgm_ray.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "mnist1d"
    root: str = "data"               # where datasets live / are cached
    download: bool = False           # torchvision datasets only; offline ones never download
    partition: str = "dirichlet"     # iid | dirichlet | sorted
    alpha: float = 0.1               # Dirichlet concentration: 0.1 extreme non-iid, 10 near iid
    equal_size: bool = False         # official code's re-slicing into equal-size shards
    batch_size: int = 32             # per client, per round
    augment: bool = True             # random crop + flip where the dataset defines it
    seed: int = 42                   # generation/split seed of the dataset itself: fixed, so runs
                                     # with different `seed` differ in partition/init/sampling only
    options: dict = field(default_factory=dict)  # dataset-specific, e.g. {num_samples: 8000}


@dataclass
class ModelConfig:
    name: str = "cnn1d"
    options: dict = field(default_factory=dict)  # e.g. {norm: gn} for resnet20


@dataclass
class TopologyConfig:
    name: str = "ring"
    n_clients: int = 16
    options: dict = field(default_factory=dict)  # e.g. {graph: karate_club} for social


@dataclass
class AlgorithmConfig:
    name: str = "qg_dsgdm_n"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    qgm_beta: float = 0.9
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    nesterov: bool = False

    def hparams(self) -> dict:
        return {
            "momentum": self.momentum, "weight_decay": self.weight_decay,
            "qgm_beta": self.qgm_beta, "betas": tuple(self.betas), "eps": self.eps,
            "nesterov": self.nesterov,
        }


@dataclass
class ScheduleConfig:
    epochs: float = 40.0
    lr_scaleup: str = "none"         # none | linear (x n_clients) | factor
    scaleup_factor: float = 1.0      # used when lr_scaleup == factor
    reference_batch: int = 0         # >0: lr is "per reference_batch samples", scaled by batch/ref
    warmup_epochs: float = 0.0
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of total epochs
    decay: float = 0.1


@dataclass
class EvalConfig:
    every_epochs: float = 1.0
    batch_size: int = 1024
    local_models: bool = True        # also report mean test accuracy of the clients' own models
    max_test_samples: int = 0        # >0: evaluate on a fixed subset (fast sweeps)


@dataclass
class RayConfig:
    address: Optional[str] = None    # None: $RAY_ADDRESS, else start a local Ray
    # auto: one ClientActor per GPU when the clients get GPUs, else one per CPU core of the
    # cluster (engine/ray_setup.py: resolve_clients_per_actor); 1 = one actor per client.
    clients_per_actor: Union[int, str] = "auto"
    gpus_per_client: Union[str, float] = "auto"
    cpus_per_client: float = 0.125
    max_inflight_rounds: int = 2
    dashboard_host: str = "127.0.0.1"
    num_cpus: Optional[int] = None   # for a local Ray; None: the machine's
    torch_threads: int = 1           # per actor: actors share cores, oversubscription hurts
    # A block's k clients as one vmapped forward/backward (engine/block.py) on CPU. auto: only
    # where it measured faster (k >= 8 clients of a model <= 100k parameters); on CUDA a block
    # always steps packed. Unpacked, a block still owns the stacked tensors and runs the
    # algorithm once; it steps its rows' forward/backward one at a time.
    pack_clients: Union[bool, str] = "auto"   # auto | true | false


@dataclass
class FaultToleranceConfig:
    checkpoint_every: int = 0        # rounds; 0 = only at the end
    on_failure: str = "replay"       # replay | drop
    keep: int = 2                    # checkpoints kept on disk
    max_restarts: int = 3


@dataclass
class ElasticConfig:
    schedule: list = field(default_factory=list)  # [[epoch, n_clients], ...]
    max_clients: Optional[int] = None


@dataclass
class TuneConfig:
    grid: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    num_samples: int = 1
    scheduler: str = "fifo"          # fifo | asha
    metric: str = "test_accuracy"
    mode: str = "max"
    max_concurrent_trials: int = 0   # 0: as many as resources allow
    grace_period_evals: int = 2      # asha


@dataclass
class Config:
    name: str = "qgm"
    seed: int = 0
    backend: str = "local"           # local | ray
    device: str = "auto"             # auto | cpu | cuda
    # Deterministic kernels in every process (qgm_ray/determinism.py): on a GPU, two runs and
    # the two engines then agree bit for bit (on CPU they always do); off by default (slower).
    deterministic: bool = False
    output_dir: Optional[str] = None  # default runs/<name>-<timestamp>
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    fault_tolerance: FaultToleranceConfig = field(default_factory=FaultToleranceConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Closed sets of values; kept here so the error message and the check are one thing.
CHOICES = {
    "backend": ("local", "ray"),
    "device": ("auto", "cpu", "cuda"),
    "data.partition": ("iid", "dirichlet", "sorted"),
    "schedule.lr_scaleup": ("none", "linear", "factor"),
    "fault_tolerance.on_failure": ("replay", "drop"),
    "tune.scheduler": ("fifo", "asha"),
    "tune.mode": ("max", "min"),
}


# ---------------------------------------------------------------- building from dicts

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
            except ConfigError as e:
                errors.append(_type_name(arg))
        raise ConfigError(f"{key}: expected one of {', '.join(errors)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string; users mean a number
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
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


def _merge(base: dict, over: dict) -> dict:
    """Recursive merge; a mapping in `over` updates, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("grid", "search"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def get_dotted(d: dict, key: str) -> Any:
    cur = d
    for p in key.split("."):
        cur = cur[p]
    return cur


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=VALUE` -> ("a.b", yaml-parsed VALUE)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set data.alpha=1.0")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({e.problem})") from None
    return key, value


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: no such file {str(p)!r}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {p}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: top level must be a mapping of keys")
    return data


def config_dict(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults merged with the file and the overrides, as a plain dict (not yet validated)."""
    d = Config().to_dict()
    if path is not None:
        d = _merge(d, read_yaml(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(d, key, value)
    return d


def from_dict(d: dict) -> Config:
    cfg = _build(Config, d)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    return from_dict(config_dict(path, overrides))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- validation

def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Every rule that can be checked without loading data. Raises ConfigError."""
    # Imported here: these registries import torch/networkx, and config parsing should not.
    from qgm_ray.algorithms import ALGORITHMS, make_algorithm_from_config
    from qgm_ray.data import DATASETS
    from qgm_ray.models import MODELS
    from qgm_ray.topology import validate_topology

    d = cfg.to_dict()
    for key, allowed in CHOICES.items():
        v = get_dotted(d, key)
        _require(v in allowed, f"{key}={v!r} is not allowed; choose one of {', '.join(allowed)}")
    _require(cfg.ray.pack_clients in ("auto", True, False),
             f"ray.pack_clients={cfg.ray.pack_clients!r} is not allowed; choose one of auto, true, false")

    _require(cfg.data.name in DATASETS, f"data.name={cfg.data.name!r} is unknown; choose one of {', '.join(DATASETS)}")
    _require(cfg.model.name in MODELS, f"model.name={cfg.model.name!r} is unknown; choose one of {', '.join(MODELS)}")
    _require(cfg.algorithm.name in ALGORITHMS,
             f"algorithm.name={cfg.algorithm.name!r} is unknown; choose one of {', '.join(ALGORITHMS)}")

    _require(cfg.data.alpha > 0, f"data.alpha must be > 0 (0.1 = extreme non-iid, 10 = near iid), got {cfg.data.alpha}")
    _require(cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    _require(cfg.algorithm.lr > 0, f"algorithm.lr must be > 0, got {cfg.algorithm.lr}")
    _require(0 <= cfg.algorithm.momentum < 1, f"algorithm.momentum must be in [0, 1), got {cfg.algorithm.momentum}")
    _require(0 <= cfg.algorithm.qgm_beta < 1, f"algorithm.qgm_beta must be in [0, 1), got {cfg.algorithm.qgm_beta}")
    _require(cfg.algorithm.weight_decay >= 0, f"algorithm.weight_decay must be >= 0, got {cfg.algorithm.weight_decay}")
    _require(len(cfg.algorithm.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in cfg.algorithm.betas),
             f"algorithm.betas must be two numbers in [0, 1), got {cfg.algorithm.betas}")
    _require(cfg.algorithm.eps > 0, f"algorithm.eps must be > 0, got {cfg.algorithm.eps}")
    make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams())

    _require(cfg.topology.n_clients >= 1, f"topology.n_clients must be >= 1, got {cfg.topology.n_clients}")
    validate_topology(cfg.topology.name, cfg.topology.n_clients, **cfg.topology.options)

    s = cfg.schedule
    _require(s.epochs > 0, f"schedule.epochs must be > 0, got {s.epochs}")
    _require(s.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {s.warmup_epochs}")
    _require(s.warmup_epochs < s.epochs or s.warmup_epochs == 0,
             f"schedule.warmup_epochs={s.warmup_epochs} must be smaller than schedule.epochs={s.epochs}")
    _require(all(isinstance(m, (int, float)) and 0 < m < 1 for m in s.milestones),
             f"schedule.milestones must be fractions of the run in (0, 1), got {s.milestones}")
    _require(0 < s.decay <= 1, f"schedule.decay must be in (0, 1], got {s.decay}")
    _require(s.scaleup_factor > 0, f"schedule.scaleup_factor must be > 0, got {s.scaleup_factor}")
    _require(s.reference_batch >= 0, f"schedule.reference_batch must be >= 0, got {s.reference_batch}")

    _require(cfg.eval.every_epochs > 0, f"eval.every_epochs must be > 0, got {cfg.eval.every_epochs}")
    _require(cfg.eval.batch_size >= 1, f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    _require(cfg.eval.max_test_samples >= 0, f"eval.max_test_samples must be >= 0, got {cfg.eval.max_test_samples}")

    r = cfg.ray
    _require(r.clients_per_actor == "auto" or (isinstance(r.clients_per_actor, int) and r.clients_per_actor >= 1),
             f"ray.clients_per_actor must be 'auto' or an integer >= 1, got {r.clients_per_actor!r}")
    _require(r.gpus_per_client == "auto" or (isinstance(r.gpus_per_client, float) and r.gpus_per_client >= 0),
             f"ray.gpus_per_client must be 'auto' or a number >= 0, got {r.gpus_per_client!r}")
    _require(r.cpus_per_client > 0, f"ray.cpus_per_client must be > 0, got {r.cpus_per_client}")
    _require(r.max_inflight_rounds >= 1, f"ray.max_inflight_rounds must be >= 1, got {r.max_inflight_rounds}")
    _require(r.torch_threads >= 1, f"ray.torch_threads must be >= 1, got {r.torch_threads}")
    _require(r.num_cpus is None or r.num_cpus >= 1, f"ray.num_cpus must be >= 1 or null, got {r.num_cpus}")

    ft = cfg.fault_tolerance
    _require(ft.checkpoint_every >= 0, f"fault_tolerance.checkpoint_every must be >= 0 rounds, got {ft.checkpoint_every}")
    _require(ft.keep >= 1, f"fault_tolerance.keep must be >= 1, got {ft.keep}")
    _require(ft.max_restarts >= 0, f"fault_tolerance.max_restarts must be >= 0, got {ft.max_restarts}")

    _validate_elastic(cfg)
    _validate_tune(cfg)


def _validate_elastic(cfg: Config) -> None:
    from qgm_ray.topology import validate_topology

    el = cfg.elastic
    prev = -1.0
    for item in el.schedule:
        _require(isinstance(item, (list, tuple)) and len(item) == 2
                 and isinstance(item[0], (int, float)) and isinstance(item[1], int) and item[1] >= 1,
                 f"elastic.schedule entries must be [epoch, n_clients] with n_clients >= 1, got {item!r}")
        _require(item[0] > prev, f"elastic.schedule epochs must increase, got {el.schedule}")
        prev = item[0]
        validate_topology(cfg.topology.name, item[1], **cfg.topology.options)
    if el.max_clients is not None:
        need = max([cfg.topology.n_clients] + [n for _, n in el.schedule])
        _require(el.max_clients >= need,
                 f"elastic.max_clients={el.max_clients} must be >= the largest client count ({need})")


def _validate_tune(cfg: Config) -> None:
    base = Config().to_dict()
    for section in ("grid", "search"):
        for key, values in getattr(cfg.tune, section).items():
            try:
                get_dotted(base, key)
            except (KeyError, TypeError):
                raise ConfigError(f"tune.{section}: {key!r} is not a config key (use dotted keys like data.alpha)") from None
            if section == "grid":
                _require(isinstance(values, list) and len(values) > 0,
                         f"tune.grid.{key} must be a non-empty list of values, got {values!r}")
            else:
                ok = (isinstance(values, dict) and len(values) == 1
                      and next(iter(values)) in ("uniform", "loguniform", "choice", "randint"))
                _require(ok, f"tune.search.{key} must be one of {{uniform|loguniform|randint: [lo, hi]}} or {{choice: [...]}}, got {values!r}")
    _require(cfg.tune.num_samples >= 1, f"tune.num_samples must be >= 1, got {cfg.tune.num_samples}")


def validate_against_data(cfg: Config, partition_sizes: list[int]) -> None:
    """Rules that need the partition: a client must hold at least one full batch."""
    smallest = min(partition_sizes)
    _require(cfg.data.batch_size <= smallest,
             f"data.batch_size={cfg.data.batch_size} is larger than the smallest client's data ({smallest} samples); "
             f"lower data.batch_size, raise data.alpha or use fewer clients")
