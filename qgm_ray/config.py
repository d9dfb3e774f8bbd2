"""Typed run configuration: built-in defaults <- YAML file <- `--set a.b=VALUE` overrides.

Every key is a dataclass field, so an unknown key or a value of the wrong type is caught
here, before any data is loaded or any actor starts. Cross-field rules that need the data
(batch size vs. smallest client) live in `validate_against_data`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from qgm_ray import grid as tune_grid
from qgm_ray import yaml_io
from qgm_ray.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "mnist1d"            # see README: Datasets, and Bring your own method
    root: str = "data"               # where datasets live / are cached
    download: bool = False           # fetch torchvision sets, AG News, DistilBERT weights; offline ones never download
    partition: str = "dirichlet"     # iid | dirichlet | sorted
    alpha: float = 0.1               # Dirichlet concentration: 0.1 extreme non-iid, 10 near iid
    equal_size: bool = False         # official code's re-slicing into equal-size shards
    batch_size: int = 32             # per client, per round
    augment: bool = True             # random crop + flip where the dataset defines it
    seed: int = 42                   # generation/split seed of the dataset itself (not `seed`)
                                     # fixed, so runs with different `seed` differ in partition/init/sampling only
    # Dataset-specific; they belong to data.name: a file, dict or --set that names another
    # dataset without options of its own drops these (config.layered, apply_overrides).
    options: dict = field(default_factory=lambda: {"num_samples": 20000})  # mnist1d: 16000 train / 4000 test


@dataclass
class ModelConfig:
    name: str = "cnn1d"              # see README: Models, and Bring your own method
    options: dict = field(default_factory=dict)  # e.g. {norm: gn} for resnet20


@dataclass
class TopologyConfig:
    name: str = "ring"                 # see README: Topologies, and Bring your own method
    n_clients: int = 16              # clients (graph nodes) at the start
    options: dict = field(default_factory=dict)  # e.g. {graph: karate_club} for social


@dataclass
class AlgorithmConfig:
    name: str = "qg_dsgdm_n"         # see README: Algorithms, and Bring your own method
    lr: float = 0.1                  # base learning rate (> 0; see schedule.* for scaling)
    # Knobs several rules read. null: the rule's own default (`config --keys` lists the named
    # rule's); a value set here is range-checked whichever rule runs, and a rule that does not
    # read the knob ignores it (a sweep over algorithm.name shares one config).
    momentum: Optional[float] = None           # [0, 1): heavy-ball / Nesterov momentum
    weight_decay: Optional[float] = None       # >= 0
    qgm_beta: Optional[float] = None           # [0, 1): quasi-global momentum's beta
    betas: Optional[list] = None               # Adam's (beta1, beta2), each in [0, 1)
    eps: Optional[float] = None                # Adam's epsilon, > 0
    nesterov: Optional[bool] = None            # gradient_tracking: Nesterov momentum
    normalization_eps: Optional[float] = None  # qg_adam, qg_adam_v2: eps of the progress normalisation (> 0)
    qgm_local_step: Optional[int] = None       # qg_dsgdm_ls(_n): rounds between QG buffer refreshes (>= 1)
    # SlowMo (official --slowmo_step_conf; algorithms/slowmo.py): dsgd, dsgdm, dsgdm_n only.
    slowmo_tau: int = 0              # SlowMo: exact average + outer step after rounds t % tau == 0 (>= 0; 0 = off)
    slowmo_beta: float = 0.0         # SlowMo: slow momentum in [0, 1) (0 with alpha 1: periodic exact averaging)
    slowmo_alpha: float = 1.0        # SlowMo: slow learning rate factor, > 0 (official default 1)
    options: dict = field(default_factory=dict)  # the rule's own knobs (its `defaults`), e.g. {clip: 0.5}

    def hparams(self) -> dict:
        """The shared knobs the user set (the rule's own defaults fill the others)."""
        values = {"momentum": self.momentum, "weight_decay": self.weight_decay, "qgm_beta": self.qgm_beta,
                  "betas": None if self.betas is None else tuple(self.betas), "eps": self.eps,
                  "nesterov": self.nesterov, "normalization_eps": self.normalization_eps,
                  "qgm_local_step": self.qgm_local_step}
        return {key: value for key, value in values.items() if value is not None}


@dataclass
class ScheduleConfig:
    epochs: float = 40.0             # > 0; one epoch = ceil(N_train / (n_clients x batch)) rounds
    lr_scaleup: str = "none"         # none | linear (x n_clients) | factor
    scaleup_factor: float = 1.0      # used when lr_scaleup == factor
    reference_batch: int = 0         # >0: lr is "per reference_batch samples", scaled by batch/ref
    warmup_epochs: float = 0.0       # linear warm-up, < epochs
    milestones: list = field(default_factory=lambda: [0.5, 0.75])  # fractions of total epochs
    decay: float = 0.1               # (0, 1]: lr factor at each milestone


@dataclass
class EvalConfig:
    every_epochs: float = 2.0        # evaluation cadence, > 0
    batch_size: int = 1024           # test batch size (memory only, not the numbers)
    local_models: bool = True        # also report mean test accuracy of the clients' own models
    max_test_samples: int = 0        # >0: evaluate on a fixed subset (fast sweeps)


@dataclass
class ComputeConfig:
    """How a block of clients computes, in either engine: the local engine's process and each
    ClientActor step their blocks the same way (ray.clients_per_actor sizes the blocks)."""
    torch_threads: int = 1           # per process stepping blocks: processes share cores, oversubscription hurts
    # A block's k clients as one vmapped forward/backward (engine/block.py) on CPU. auto: only
    # where it is faster (k >= 8 clients of a model <= 100k parameters); on CUDA a block
    # always steps packed. Unpacked, a block still owns the stacked tensors and runs the
    # algorithm once; it steps its rows' forward/backward one at a time.
    pack_clients: Union[bool, str] = "auto"   # auto | true | false
    # Rows of a packed block per vmapped forward/backward. auto: all of them, except on a GPU
    # where a probe says the block's activations would not fit in its share of the GPU
    # (engine/memory.py); a number caps it.
    vmap_chunk: Union[int, str] = "auto"      # auto | k >= 1
    # How a packed block computes its forward/backward (engine/kernels.py). batched: each
    # Linear / Conv1d as one batched matrix product over the block's clients, for models made
    # of those layers alone (cnn1d, mlp; others keep vmap); vmap: one vmap over the clients.
    # auto: batched on CPU, vmap on CUDA. The choice changes a run's last bits, never the math.
    kernels: str = "auto"                     # auto | vmap | batched


@dataclass
class RayConfig:
    address: Optional[str] = None    # None: $RAY_ADDRESS, else start a local Ray
    # auto: one ClientActor per GPU when the clients get GPUs, else one per CPU core of the
    # cluster (engine/ray_setup.py: resolve_clients_per_actor); 1 = one actor per client.
    clients_per_actor: Union[int, str] = "auto"   # auto (one actor per GPU, else per CPU core) or k >= 1
    gpus_per_client: Union[str, float] = "auto"   # auto, or a GPU fraction per client (0: CPU)
    # CPUs Ray reserves per ClientActor: a block of clients needs the cores its threads use, not
    # a slice of a core per client. auto: compute.torch_threads, or an even share of the cluster's
    # CPUs where more actors are asked for than that fits (an explicit clients_per_actor, a Tune
    # trial's own process; at most 4 actors a core); engine/ray_setup.py: actor_resources.
    cpus_per_actor: Union[str, float] = "auto"    # auto or a number > 0
    # Per-client accounting instead: an actor of k clients reserves k x this many CPUs (1.0: one
    # core per client, for clients big enough to use one). null: ray.cpus_per_actor decides.
    cpus_per_client: Optional[float] = None
    max_inflight_rounds: int = 2     # rounds of payloads in flight at most, >= 1
    # Where every ClientActor shares one node, an actor call runs many whole rounds and the
    # actors swap payload rows through that node's shared memory (engine/fused.py): the same
    # numbers without a call and object-store objects per round. auto: calls of about a quarter
    # second; k: k rounds a call; 1: one call a round, payloads through the object store (what
    # runs across nodes, with compression, time-varying graphs, barriers or asynchrony).
    rounds_per_call: Union[int, str] = "auto"    # auto or k >= 1
    dashboard_host: str = "127.0.0.1"  # where a local Ray's dashboard listens
    # A local Ray's dashboard (its web UI; the printed URL). false: Ray starts without it, about
    # a second sooner; metrics still reach Prometheus, `ray status` and the state API still work.
    dashboard: bool = True
    num_cpus: Optional[int] = None   # for a local Ray; None: the machine's
    # graph: actors holding graph neighbours share a node where resources allow
    # (engine/placement.py); default: wherever Ray's scheduler puts them.
    placement: str = "graph"
    # Keep a run's coordinator and ClientActors when it ends, for the next run of this driver
    # process whose actors ask Ray for the same (engine/crew.py): it skips their start and
    # imports. They hold their CPUs until then, `qgm_ray.release_actors()` or the driver's exit.
    # Tune's trials of a sweep on Ray keep theirs for the sweep's next trial.
    reuse_actors: bool = False       # keep the actors for this process's next Ray run asking for the same


@dataclass
class FaultToleranceConfig:
    checkpoint_every: int = 0        # rounds; 0 = only at the end
    on_failure: str = "replay"       # replay | drop
    keep: int = 2                    # checkpoints kept on disk
    max_restarts: int = 3            # recoveries before the run gives up (resumable)
    # Ray: seconds the replacements of lost actors wait for a node (their start included); then
    # every actor is re-planned to share the cores left, in the same blocks (the same numbers).
    resource_wait_s: Optional[float] = 60.0   # s to wait for a node, then share the cores left; null: wait


@dataclass
class ElasticConfig:
    schedule: list = field(default_factory=list)  # [[epoch, n_clients], ...]
    max_clients: Optional[int] = None  # data shards cut; null: the largest client count


@dataclass
class TuneConfig:
    grid: dict = field(default_factory=dict)    # {dotted.key: [values]}: every combination; {section: [{key: values}, ...]}: one branch at a time (qgm_ray/grid.py)
    search: dict = field(default_factory=dict)  # {dotted.key: {uniform|loguniform|randint: [lo, hi]} | {choice: [..]}}
    num_samples: int = 1             # samples of the search space per grid point
    scheduler: str = "fifo"          # fifo | asha
    metric: str = "test_accuracy"
    mode: str = "max"                # max | min
    max_concurrent_trials: int = 0   # 0: as many as resources allow
    grace_period_evals: int = 2      # asha: evaluations before a trial can be stopped


@dataclass
class CompressionConfig:
    """Compressed gossip (engine/choco.py: CHOCO-Gossip): each client sends Q(payload - x_hat),
    a compressed difference to its public copy, instead of its payload. The compressor's own
    knobs take its default where null; a value set here is range-checked whichever op runs, and
    an op that does not read it ignores it (a sweep over compression.op shares one config)."""
    op: str = "none"                 # none | top_k | random_k | qsgd | sign | package.module:attr
    keep: Optional[float] = None     # (0, 1]: fraction of entries top_k / random_k send, which need it (official compress_ratio = 1 - keep)
    levels: Optional[int] = None     # >= 1: qsgd's quantization levels s, which it needs (official quantize_level)
    unbiased: Optional[bool] = None  # random_k (default false): scale kept entries by d/m; qsgd (default true): no contraction (official is_biased = not unbiased)
    consensus_lr: float = 1.0        # (0, 1]: CHOCO's consensus step size gamma (official consensus_stepsize)
    warmup_epochs: float = 0.0       # >= 0: epochs of the keep warm-up (official compress_warmup_epochs; 0 = off)
    # keep fractions stepped through during the warm-up, each kept value >= keep used for an
    # equal share of warmup_epochs (official compress_warmup_values, which are 1 - keep)
    warmup_keep: list = field(default_factory=lambda: [0.25, 0.0625, 0.015625, 0.004, 0.001])  # keep values of the warm-up, each in (0, 1]

    def options(self) -> dict:
        """The compressor knobs the user set that `op` reads (its own defaults fill the others;
        one it does not read is ignored, as a rule ignores another rule's knob)."""
        from qgm_ray.compression import compressor_options
        reads = compressor_options(self.op)
        values = {"keep": self.keep, "levels": self.levels, "unbiased": self.unbiased}
        return {key: value for key, value in values.items() if value is not None and key in reads}


@dataclass
class ClockSpeedConfig:
    sigma: float = 0.0               # per-client speed factor exp(N(0, sigma^2)), drawn from `seed`; 0: every client speed 1


@dataclass
class ClockStragglersConfig:
    fraction: float = 0.0            # share of the clients that straggle, in [0, 1] (rounded to a whole count)
    slowdown: float = 5.0            # a straggler's local step takes this many times longer (>= 1)
    redraw: str = "fixed"            # fixed: the same clients the whole run | round: drawn anew every round


@dataclass
class ClockConfig:
    """The simulated time of the system the run models (qgm_ray/clock.py): metrics.csv's
    sim_seconds. A model, never a measurement; in sync mode it never changes the numbers."""
    mode: str = "sync"               # sync: rounds behind each client's in-neighbours | async: no barrier, each client steps at its own pace and mixes the newest payloads that arrived (qgm_ray/async_schedule.py)
    step_seconds: float = 0.1        # one local step of one client at speed 1 (> 0)
    latency_ms: float = 1.0          # per message on every link (>= 0)
    bandwidth_mbps: float = 1000.0   # per link, 10^6 bits per second (> 0)
    speed: ClockSpeedConfig = field(default_factory=ClockSpeedConfig)
    stragglers: ClockStragglersConfig = field(default_factory=ClockStragglersConfig)
    trace: Optional[str] = None      # CSV client,from_round,speed (client: graph position): its speed factor, times sigma's, from that round on


@dataclass
class TrackingMlflowConfig:
    tracking_uri: Optional[str] = None   # where MLflow keeps runs (http://host:5000, sqlite:///path.db, file:///dir); set: MLflow is on
    experiment: Optional[str] = None     # MLflow experiment (needs tracking_uri); null: the run's name


@dataclass
class TrackingWandbConfig:
    project: Optional[str] = None        # W&B project; set: W&B is on
    mode: Optional[str] = None           # online | offline | disabled (needs project); null: W&B's own (WANDB_MODE, else online)


@dataclass
class TrackingConfig:
    """Experiment trackers (qgm_ray/tracking.py): every metrics.csv row and the resolved config,
    as the run goes. A tracker that fails mid-run stops with one warning line; training goes on."""
    tensorboard: bool = False            # event files in <run dir>/tensorboard/: a scalar per metrics.csv column by round, the config as hparams
    mlflow: TrackingMlflowConfig = field(default_factory=TrackingMlflowConfig)
    wandb: TrackingWandbConfig = field(default_factory=TrackingWandbConfig)


@dataclass
class Config:
    name: str = "default"            # run name: letters, digits, . _ - (directory runs/<name>-<time>), at most 100 characters
    seed: int = 0                    # 0 <= seed < 2^32: partition, init, sampling, random graphs
    backend: str = "ray"             # local (in-process) | ray (ClientActors); the same numbers
    device: str = "auto"             # auto | cpu | cuda
    # Deterministic kernels in every process (qgm_ray/determinism.py): on a GPU, two runs and
    # the two engines then agree bit for bit (on CPU they always do); off by default (slower).
    deterministic: bool = False
    output_dir: Optional[str] = None  # null: runs/<name>-<timestamp>; must be new or empty (else --resume it)
    progress: bool = True            # progress bar (--quiet: false)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    fault_tolerance: FaultToleranceConfig = field(default_factory=FaultToleranceConfig)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Closed sets of values; kept here so the error message and the check are one thing.
CHOICES = {
    "backend": ("local", "ray"),
    "device": ("auto", "cpu", "cuda"),
    "data.partition": ("iid", "dirichlet", "sorted"),
    "schedule.lr_scaleup": ("none", "linear", "factor"),
    "fault_tolerance.on_failure": ("replay", "drop"),
    "ray.placement": ("graph", "default"),
    "tune.scheduler": ("fifo", "asha"),
    "tune.mode": ("max", "min"),
    "clock.stragglers.redraw": ("fixed", "round"),
    "clock.mode": ("sync", "async"),
    "compute.kernels": ("auto", "vmap", "batched"),
}

# What a trial reports to Tune (every metrics.csv column, plus the run's outcome), so the only
# values `tune.metric` can name; checked here, not after the first trial has trained.
TUNE_METRICS = ("test_accuracy", "final_test_accuracy", "best_test_accuracy", "local_test_accuracy",
                "train_loss", "test_loss", "consensus_distance", "sim_seconds")

# Upper limits that only a typo reaches (schedule.epochs=1e12 exhausted memory while planning).
MAX_EPOCHS = 100_000
MAX_EVALUATIONS = 100_000
# What a config may hold: each far above a real run, far below what takes memory or time to
# plan before the first round (a sweep lists its trials, a schedule its steps, up front).
MAX_NAME_LENGTH = 100        # runs/<name>-<timestamp> must stay a valid file name (255 bytes)
MAX_SEED = 2**32 - 1         # the largest seed every generator in use takes (numpy's legacy, networkx's)
MAX_MILESTONES = 100
MAX_ELASTIC_STEPS = 1_000
MAX_TRIALS = 10_000          # a sweep's trials: grid points x tune.num_samples

# `name` becomes a directory name under runs/: no separators, no `..`.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Dataset options that count something: a positive integer or the dataset cannot be made.
POSITIVE_INT_DATA_OPTIONS = ("num_samples", "num_features", "num_classes", "template_len", "final_seq_length")


# ---------------------------------------------------------------- building from dicts

def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: a message names a huge value without printing it."""
    if isinstance(value, (list, dict, tuple)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value):,} entries"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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


def config_dict(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults merged with the file and the overrides, as a plain dict (not yet validated)."""
    given = read_yaml(path) if path is not None else {}
    return layered(given, dict(parse_override(item) for item in overrides))


def layered(given: dict, values: dict) -> dict:
    """The built-in defaults <- `given` (a file's or a dict's nested keys) <- `values`
    ({dotted key: value} overrides), as a plain dict (not yet validated). Each layer's
    dataset (and rule, and plug-in model or graph) takes the options written for it: the
    defaults' mnist1d options do not go to a file's cifar10."""
    defaults = Config().to_dict()
    given = moved_nested(given)
    d = _merge(defaults, given)
    before = _names(defaults)
    for section, old in before.items():   # another dataset's options replace, never merge
        layer = given.get(section)
        if (isinstance(layer, dict) and isinstance(layer.get("options"), dict)
                and layer.get("name", old) != old and isinstance(d.get(section), dict)):
            d[section]["options"] = copy.deepcopy(layer["options"])
    _drop_foreign_options(d, before, {f"{section}.{key}" for section, keys in given.items()
                                      if isinstance(keys, dict) for key in keys})
    apply_overrides(d, values)
    # The file's client count was written for the file's graph: `--set topology.name=social` on
    # configs/default.yaml (a ring of 16) takes the social graph's size, as data.options go
    # with data.name (apply_overrides).
    def sets(mapping: dict, key: str) -> bool:
        return key in mapping or any(k == "topology" and isinstance(v, dict) and key.split(".")[1] in v
                                     for k, v in mapping.items())
    file_sets_n = isinstance(given.get("topology"), dict) and "n_clients" in given["topology"]
    if not sets(values, "topology.n_clients") and (not file_sets_n or sets(values, "topology.name")):
        size_from_graph(d)
    return d


def size_from_graph(d: dict) -> None:
    """A social graph fixes the client count: where the user did not set topology.n_clients,
    take the graph's size instead of the default 16 (which no social graph has)."""
    topo = d.get("topology")
    if not isinstance(topo, dict) or topo.get("name") != "social":
        return
    from qgm_ray.topology import DEFAULT_SOCIAL_GRAPH, SOCIAL_GRAPHS
    options = topo.get("options") if isinstance(topo.get("options"), dict) else {}
    graph = options.get("graph", DEFAULT_SOCIAL_GRAPH)
    if graph in SOCIAL_GRAPHS:   # an unknown graph is refused by validation, with the names
        topo["n_clients"] = SOCIAL_GRAPHS[graph][1]


def apply_overrides(d: dict, values: dict) -> dict:
    """Set dotted keys in `d` (in place; returned). A file's `data.options` are options of the
    file's dataset: when the overrides change `data.name` and do not set any data option
    themselves, the old options are dropped instead of being handed to another dataset
    (`--set data.name=cifar10` on configs/default.yaml must not fail on mnist1d's num_samples).
    The same holds for `algorithm.options` (a rule's own knobs) and, where a plug-in
    (`module:attr`) is involved, for `model.options` and `topology.options`; built-in models
    and graphs keep sharing their section's options as before."""
    before = _names(d)
    values = moved_values(values)
    for key, value in values.items():
        set_dotted(d, key, value)
    _drop_foreign_options(d, before, values)
    return d


_NAMED_SECTIONS = ("data", "algorithm", "model", "topology")


def _names(d: dict) -> dict:
    return {section: d[section].get("name") if isinstance(d.get(section), dict) else None
            for section in _NAMED_SECTIONS}


def _drop_foreign_options(d: dict, before: dict, set_keys) -> None:
    """Empty `<section>.options` where a layer changed `<section>.name` (from `before`)
    without setting any of that section's options (`set_keys`: the dotted keys it set)."""
    from qgm_ray.plugins import is_reference

    for section, old in before.items():
        new = d.get(section, {}).get("name") if isinstance(d.get(section), dict) else None
        sets_options = any(k == section or k.startswith(f"{section}.options") for k in set_keys)
        if new == old or sets_options or not isinstance(d.get(section), dict):
            continue
        if section in ("data", "algorithm") or is_reference(old) or is_reference(new):
            d[section]["options"] = {}


def trial_dict(base: dict, params: dict) -> dict:
    """The config dict of one sweep trial: `params` (dotted keys) over the sweep's `base`, with
    an empty tune section (a trial is a plain run). Shared by tune.py and report.py."""
    d = apply_overrides(copy.deepcopy(base), params or {})  # a grid over data.name drops the file's options
    d["tune"] = Config().to_dict()["tune"]
    return d


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


# ---------------------------------------------------------------- key listing

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
    from qgm_ray.algorithms.base import SHARED
    return SHARED


def _rule_rows(name: str) -> tuple[dict, list]:
    """For rule `name`: {algorithm.<shared key>: its default in this rule} and a row per knob of
    its own (`algorithm.options.<knob>`), so `config --keys` shows what the named rule runs with."""
    from qgm_ray.algorithms.base import SHARED
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


# ---------------------------------------------------------------- validation

def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Every rule that can be checked without loading data. Raises ConfigError."""
    # Imported here: these registries import torch/networkx, and config parsing should not.
    from qgm_ray.algorithms import make_algorithm_from_config
    from qgm_ray.algorithms.base import check_shared
    from qgm_ray.topology import validate_topology

    _require(len(cfg.name) <= MAX_NAME_LENGTH,
             f"name is {len(cfg.name)} characters long; at most {MAX_NAME_LENGTH} (it names the run directory)")
    _require(bool(NAME_PATTERN.match(cfg.name)),
             f"name={cfg.name!r} is not allowed: it names the run directory under runs/; use letters, "
             f"digits, '.', '_' and '-' (no '/', no leading '.')")
    for key, seed in (("seed", cfg.seed), ("data.seed", cfg.data.seed)):
        _require(0 <= seed <= MAX_SEED, f"{key} must be an integer in [0, 2^32) (0 .. {MAX_SEED}), got {_short(seed)}")
    _require(cfg.output_dir is None or cfg.output_dir.strip() != "",
             "output_dir must be a directory path or null (default runs/<name>-<timestamp>), got ''")
    d = cfg.to_dict()
    for key, allowed in CHOICES.items():
        v = get_dotted(d, key)
        _require(v in allowed, f"{key}={v!r} is not allowed; choose one of {', '.join(allowed)}")
    c = cfg.compute
    _require(c.pack_clients in ("auto", True, False),
             f"compute.pack_clients={c.pack_clients!r} is not allowed; choose one of auto, true, false")
    _require(c.vmap_chunk == "auto" or (isinstance(c.vmap_chunk, int) and not isinstance(c.vmap_chunk, bool)
                                        and c.vmap_chunk >= 1),
             f"compute.vmap_chunk={c.vmap_chunk!r} is not allowed; choose auto or an integer >= 1 "
             "(clients per vmapped step)")
    _require(c.torch_threads >= 1, f"compute.torch_threads must be >= 1, got {c.torch_threads}")

    _validate_names(cfg)

    _validate_data_options(cfg)
    _validate_model_options(cfg)
    _require(cfg.data.alpha > 0, f"data.alpha must be > 0 (0.1 = extreme non-iid, 10 = near iid), got {cfg.data.alpha}")
    _require(cfg.data.batch_size >= 1, f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    _require(cfg.algorithm.lr > 0, f"algorithm.lr must be > 0, got {cfg.algorithm.lr}")
    check_shared(cfg.algorithm.hparams())
    rule = make_algorithm_from_config(cfg.algorithm.name, cfg.algorithm.hparams(), cfg.algorithm.options)
    if ":" in cfg.algorithm.name:   # a plug-in: its state must slice per client like the built-ins'
        from qgm_ray.algorithms.registry import check_state_contract
        check_state_contract(rule)
    _validate_slowmo(cfg.algorithm)

    _require(cfg.topology.n_clients >= 1, f"topology.n_clients must be >= 1, got {cfg.topology.n_clients}")
    _require("seed" not in cfg.topology.options,
             "topology.options.seed is not an option: a graph's randomness follows the run's `seed` "
             "(a plug-in graph with a `seed` parameter gets it)")
    validate_topology(cfg.topology.name, cfg.topology.n_clients, seed=cfg.seed, **cfg.topology.options)
    _validate_push_sum(cfg.algorithm.name, cfg.topology.name, cfg.topology.options, cfg.topology.n_clients, cfg.seed)

    s = cfg.schedule
    _require(s.epochs > 0, f"schedule.epochs must be > 0, got {s.epochs}")
    # A run is planned round by round (evaluation and checkpoint points are listed up front): a
    # typo such as 1e12 would exhaust memory before the first round instead of failing here.
    _require(s.epochs <= MAX_EPOCHS, f"schedule.epochs must be <= {MAX_EPOCHS:g}, got {s.epochs:g}")
    _require(s.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {s.warmup_epochs}")
    _require(s.warmup_epochs < s.epochs or s.warmup_epochs == 0,
             f"schedule.warmup_epochs={s.warmup_epochs} must be smaller than schedule.epochs={s.epochs}")
    _require(len(s.milestones) <= MAX_MILESTONES,
             f"schedule.milestones holds {len(s.milestones):,} entries; at most {MAX_MILESTONES}")
    _require(all(isinstance(m, (int, float)) and 0 < m < 1 for m in s.milestones),
             f"schedule.milestones must be fractions of the run in (0, 1), got {s.milestones}")
    _require(0 < s.decay <= 1, f"schedule.decay must be in (0, 1], got {s.decay}")
    _require(s.scaleup_factor > 0, f"schedule.scaleup_factor must be > 0, got {s.scaleup_factor}")
    _require(s.reference_batch >= 0, f"schedule.reference_batch must be >= 0, got {s.reference_batch}")

    _require(cfg.eval.every_epochs > 0, f"eval.every_epochs must be > 0, got {cfg.eval.every_epochs}")
    _require(s.epochs / cfg.eval.every_epochs <= MAX_EVALUATIONS,
             f"eval.every_epochs={cfg.eval.every_epochs:g} gives {s.epochs / cfg.eval.every_epochs:.3g} evaluations "
             f"in schedule.epochs={s.epochs:g}; at most {MAX_EVALUATIONS:g} (raise eval.every_epochs)")
    _require(cfg.eval.batch_size >= 1, f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    _require(cfg.eval.max_test_samples >= 0, f"eval.max_test_samples must be >= 0, got {cfg.eval.max_test_samples}")

    r = cfg.ray
    _require(r.clients_per_actor == "auto" or (isinstance(r.clients_per_actor, int) and r.clients_per_actor >= 1),
             f"ray.clients_per_actor must be 'auto' or an integer >= 1, got {r.clients_per_actor!r}")
    _require(r.gpus_per_client == "auto" or (isinstance(r.gpus_per_client, float) and r.gpus_per_client >= 0),
             f"ray.gpus_per_client must be 'auto' or a number >= 0, got {r.gpus_per_client!r}")
    _require(r.cpus_per_actor == "auto" or (isinstance(r.cpus_per_actor, float) and r.cpus_per_actor > 0),
             f"ray.cpus_per_actor must be 'auto' or a number > 0, got {r.cpus_per_actor!r}")
    _require(r.cpus_per_client is None or r.cpus_per_client > 0,
             f"ray.cpus_per_client must be > 0 or null, got {r.cpus_per_client}")
    _require(r.cpus_per_client is None or r.cpus_per_actor == "auto",
             f"ray.cpus_per_actor={r.cpus_per_actor} and ray.cpus_per_client={r.cpus_per_client} both size the "
             f"ClientActors; set only one (cpus_per_client: null to use cpus_per_actor)")
    _require(r.max_inflight_rounds >= 1, f"ray.max_inflight_rounds must be >= 1, got {r.max_inflight_rounds}")
    _require(r.rounds_per_call == "auto" or (isinstance(r.rounds_per_call, int) and r.rounds_per_call >= 1),
             f"ray.rounds_per_call must be 'auto' or an integer >= 1, got {r.rounds_per_call!r}")
    _require(r.num_cpus is None or r.num_cpus >= 1, f"ray.num_cpus must be >= 1 or null, got {r.num_cpus}")
    _validate_dashboard_host(cfg)

    ft = cfg.fault_tolerance
    _require(ft.checkpoint_every >= 0, f"fault_tolerance.checkpoint_every must be >= 0 rounds, got {ft.checkpoint_every}")
    _require(ft.keep >= 1, f"fault_tolerance.keep must be >= 1, got {ft.keep}")
    _require(ft.max_restarts >= 0, f"fault_tolerance.max_restarts must be >= 0, got {ft.max_restarts}")
    _require(ft.resource_wait_s is None or ft.resource_wait_s >= 0,
             f"fault_tolerance.resource_wait_s must be >= 0 seconds or null, got {ft.resource_wait_s}")

    _validate_elastic(cfg)
    _validate_compression(cfg, rule)
    _validate_tune(cfg)
    _validate_clock(cfg, rule)
    _validate_tracking(cfg)


# What an asynchronous run needs (qgm_ray/async_schedule.py): one W for every step of every
# client (no rounds to index a time-varying graph by), the same clients the whole run (the
# schedule is computed for them up front) and symmetric links (AD-PSGD's pair averaging).
ASYNC_NEEDS = ("fixed_w", "undirected", "fixed_members", "gossip")


def _validate_clock(cfg: Config, rule) -> None:
    """The clock's keys; a trace file is read now (qgm_ray/clock.py), so a bad one is one line
    before anything starts."""
    from qgm_ray import clock
    k = cfg.clock
    _require(k.step_seconds > 0, f"clock.step_seconds must be > 0 (seconds of one local step at speed 1), "
                                 f"got {k.step_seconds}")
    _require(k.latency_ms >= 0, f"clock.latency_ms must be >= 0, got {k.latency_ms}")
    _require(k.bandwidth_mbps > 0, f"clock.bandwidth_mbps must be > 0 (10^6 bits per second), got {k.bandwidth_mbps}")
    _require(k.speed.sigma >= 0, f"clock.speed.sigma must be >= 0 (0: every client speed 1), got {k.speed.sigma}")
    _require(0 <= k.stragglers.fraction <= 1, f"clock.stragglers.fraction must be in [0, 1], got {k.stragglers.fraction}")
    _require(k.stragglers.slowdown >= 1, f"clock.stragglers.slowdown must be >= 1 (times slower), "
                                         f"got {k.stragglers.slowdown}")
    if k.trace is not None:
        clock.read_trace(k.trace)
    _validate_async(cfg, rule)


def _validate_async(cfg: Config, rule) -> None:
    """clock.mode=async and the asynchronous rules (AD-PSGD): what they cannot mean is refused
    in one line before anything starts."""
    pairwise = bool(getattr(rule, "pairwise", False))
    name = cfg.algorithm.name
    if cfg.clock.mode == "sync":
        _require(not pairwise, f"algorithm.name={name} averages with one peer whenever a client finishes a step, "
                               f"so it runs only asynchronously; set clock.mode=async")
        return
    who = "clock.mode=async"
    _require(cfg.topology.n_clients >= 2, f"{who} gossips between clients: topology.n_clients must be >= 2, "
                                          f"got {cfg.topology.n_clients}")
    from qgm_ray.algorithms.registry import ASYNC_ALGORITHMS, push_sum_algorithms
    _require(pairwise or bool(getattr(rule, "push_sum", False)),
             f"{who} mixes the newest payload of each neighbour that has arrived, which needs a rule whose payload "
             f"is its parameters ({', '.join(push_sum_algorithms() + list(ASYNC_ALGORITHMS))}), "
             f"got algorithm.name={name}")
    _require(not (cfg.topology.name == "complete" and not cfg.topology.options.get("lazy")),
             f"{who} has no all-reduce: topology.name=complete averages everyone behind a barrier; choose a "
             f"sparse graph (or complete with lazy: true)")
    _require(cfg.compression.op == "none", f"{who} sends whole payloads (CHOCO-Gossip's public copies need every "
                                           f"neighbour's difference every round); set compression.op=none")
    _require(cfg.algorithm.slowmo_tau == 0, f"{who} has no round barrier for SlowMo's exact average; "
                                            f"set algorithm.slowmo_tau=0")
    _refuse_unmet(who, ASYNC_NEEDS, cfg, bool(getattr(rule, "centralized", False)),
                  "choose a static undirected graph, a gossip rule and no elastic.schedule or on_failure=drop")


def _validate_tracking(cfg: Config) -> None:
    """A tracker's keys hang together and its package is installed: one line before anything starts."""
    from qgm_ray import tracking
    t = cfg.tracking
    _require(t.mlflow.experiment is None or t.mlflow.tracking_uri is not None,
             f"tracking.mlflow.experiment={t.mlflow.experiment!r} needs tracking.mlflow.tracking_uri: where MLflow "
             f"keeps runs (http://host:5000, sqlite:///path/mlflow.db or file:///path/mlruns)")
    _require(t.wandb.mode is None or t.wandb.project is not None,
             f"tracking.wandb.mode={t.wandb.mode!r} needs tracking.wandb.project: the W&B project the runs go to")
    _require(t.wandb.mode in (None,) + tracking.WANDB_MODES,
             f"tracking.wandb.mode={t.wandb.mode!r} is not allowed; choose one of {', '.join(tracking.WANDB_MODES)} "
             f"or null (W&B's own: WANDB_MODE, else online)")
    tracking.check_installed(t)


def _validate_names(cfg: Config) -> None:
    """Each plug-in name is registered or imports (`package.module:attr`) to the right
    kind of object; a model's or dataset's options fit its signature. The model's output and
    the dataset's arrays are checked when the data is loaded (runner.prepare)."""
    import qgm_ray.compression.registry  # noqa: F401 - these imports register the built-in names
    import qgm_ray.data  # noqa: F401
    import qgm_ray.models  # noqa: F401
    import qgm_ray.topology  # noqa: F401
    from qgm_ray import plugins

    for kind in plugins.KEYS:
        name = plugins.configured(cfg, kind)
        if kind != "algorithm" and name is not None:   # a rule is checked with its options below
            # a built-in is known by name (its module, which imports torch, stays unloaded)
            plugins.resolve(kind, name) if plugins.is_reference(name) else plugins.check_name(kind, name)
    for kind, skip, reserved in (("model", 2, ()), ("data", 1, ("augment",))):
        section = getattr(cfg, kind)
        if plugins.is_reference(section.name):
            fn = plugins.resolve(kind, section.name)
            _require(callable(fn), f"{kind}.name={section.name!r} is a {type(fn).__name__}, not a function or class")
            plugins.check_options(kind, section.name, fn, skip, section.options, reserved)


def dataset_options(name: str) -> Optional[tuple]:
    """The `data.options` keys dataset `name` takes (besides augment); None if unknown here
    (a plug-in's are checked against its signature)."""
    from qgm_ray import data as qdata
    offline = getattr(qdata, "_OFFLINE_OPTS", {})
    if name in offline:
        return tuple(offline[name])
    if name in getattr(qdata, "_TORCHVISION", {}):
        return ()
    return None


def _validate_data_options(cfg: Config) -> None:
    from qgm_ray import data as qdata
    from qgm_ray.plugins import is_reference
    opts, name = cfg.data.options, cfg.data.name
    allowed = dataset_options(name)
    if is_reference(name):
        if "augment" in opts:
            allowed_aug = tuple(getattr(qdata, "AUGMENTATIONS", ()))
            _require(opts["augment"] is None or opts["augment"] in allowed_aug,
                     f"data.options.augment={opts['augment']!r} is not allowed; choose one of "
                     f"{', '.join(allowed_aug)} or null")
        return   # a plug-in's options are its own (checked against its signature)
    if allowed is not None:
        unknown = sorted(set(opts) - set(allowed) - {"augment"})
        _require(not unknown,
                 f"data.options.{unknown[0] if unknown else ''} is not an option of data.name={name!r} "
                 f"(allowed: {', '.join(allowed + ('augment',))}); remove it, e.g. --set data.options={{}}")
    for key in POSITIVE_INT_DATA_OPTIONS:
        if key in opts:
            v, least = opts[key], 2 if key == "num_classes" else 1
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= least,
                     f"data.options.{key} must be an integer >= {least}, got {v!r}")
    for key, v in opts.items():
        if isinstance(v, float):
            _require(math.isfinite(v), f"data.options.{key} must be a finite number, got {v!r}")
    if "augment" in opts:
        allowed_aug = tuple(getattr(qdata, "AUGMENTATIONS", ()))
        _require(opts["augment"] is None or opts["augment"] in allowed_aug,
                 f"data.options.augment={opts['augment']!r} is not allowed; choose one of "
                 f"{', '.join(allowed_aug)} or null")


def _validate_model_options(cfg: Config) -> None:
    """Shapes of the common model options; anything else is checked by building the model
    once in runner.prepare (it needs the data's shape)."""
    o = cfg.model.options
    from qgm_ray.plugins import is_reference
    if is_reference(cfg.model.name):
        return   # a plug-in's options are its own (checked against its signature)
    if "hidden" in o:
        h = o["hidden"]
        _require(isinstance(h, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                      for x in h),
                 f"model.options.hidden must be a list of layer widths (integers >= 1), e.g. [100, 100]; got {h!r}")
    for key in ("channels", "groups", "scaling", "depth"):
        if key in o:
            v = o[key]
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                     f"model.options.{key} must be an integer >= 1, got {v!r}")


def _validate_push_sum(algorithm: str, topology: str, options: dict, n: int, seed: int) -> None:
    """A directed graph's W is only column stochastic: gossip there is push-sum, which de-biases
    parameters; rules that mix anything else (D2, gradient tracking) are undefined on it."""
    from qgm_ray.algorithms.registry import gossips_with_push_sum, push_sum_algorithms
    from qgm_ray.topology import is_directed

    _require(not is_directed(topology, options, n, seed) or gossips_with_push_sum(algorithm),
             f"algorithm.name={algorithm} cannot run on topology.name={topology} (a directed graph, "
             f"gossiped with push-sum); choose one of {', '.join(push_sum_algorithms())}, "
             "or an undirected topology")


def _validate_elastic(cfg: Config) -> None:
    from qgm_ray.topology import validate_topology

    el = cfg.elastic
    _require(len(el.schedule) <= MAX_ELASTIC_STEPS,
             f"elastic.schedule holds {len(el.schedule):,} steps; at most {MAX_ELASTIC_STEPS:,}")
    prev = -1.0
    for item in el.schedule:
        # YAML's `true` is a Python bool, which is an int: [[true, 2]] would be read as epoch 1.
        _require(isinstance(item, (list, tuple)) and len(item) == 2
                 and isinstance(item[0], (int, float)) and not isinstance(item[0], bool)
                 and isinstance(item[1], int) and not isinstance(item[1], bool) and item[1] >= 1,
                 f"elastic.schedule entries must be [epoch, n_clients] (numbers, n_clients >= 1), got {item!r}")
        _require(item[0] > prev, f"elastic.schedule epochs must increase, got {el.schedule}")
        _require(0 < item[0] < cfg.schedule.epochs,
                 f"elastic.schedule: the step at epoch {item[0]:g} is outside the run (epochs 0 < e < "
                 f"schedule.epochs={cfg.schedule.epochs:g}) and would never be applied")
        prev = item[0]
        validate_topology(cfg.topology.name, item[1], seed=cfg.seed, **cfg.topology.options)
    if el.max_clients is not None:
        need = max([cfg.topology.n_clients] + [n for _, n in el.schedule])
        _require(el.max_clients >= need,
                 f"elastic.max_clients={el.max_clients} must be >= the largest client count ({need})")


# What a rule, a compressor or the compressed exchange can declare it needs (a class attribute
# `requires`), with why, written once: each need is refused with one line where it fails.
NEEDS = {
    "fixed_w": "the same W every round",
    "fixed_members": "the same clients all run (no elastic.schedule, no fault_tolerance.on_failure=drop)",
    "undirected": "an undirected (doubly stochastic) graph",
    "gossip": "gossip over W (not an all-reduce rule)",
}
# CHOCO-Gossip (engine/choco.py): s_i = sum_j W_ij x_hat_j is kept up to date with the neighbours'
# compressed differences, which holds only while W stays the same (a resize restarts every x_hat
# and s at zero, so membership may change); push-sum and all-reduce rules mix no such sum.
CHOCO_NEEDS = ("fixed_w", "undirected", "gossip")
# (check, allowed values) per key of the exchange's own (the compressors check theirs).
COMPRESSION_CHECKS = {
    "consensus_lr": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0 epochs (0: no warm-up)"),
}


def unmet_needs(cfg: Config, needs, centralized: bool = False) -> list[tuple[str, str]]:
    """[(need, what in the config fails it)] for these needs (NEEDS' names) in this config."""
    from qgm_ray.topology import TIME_VARYING, is_directed

    t = cfg.topology
    directed = is_directed(t.name, t.options, t.n_clients, cfg.seed)
    fails = {
        "fixed_w": (t.name in TIME_VARYING and not centralized, f"topology.name={t.name} is time-varying"),
        "fixed_members": (bool(cfg.elastic.schedule) or cfg.fault_tolerance.on_failure == "drop",
                          "elastic.schedule is set" if cfg.elastic.schedule else "fault_tolerance.on_failure=drop"),
        "undirected": (directed and not centralized, f"topology.name={t.name} is directed (push-sum)"),
        "gossip": (centralized, f"algorithm.name={cfg.algorithm.name} is an all-reduce rule"),
    }
    return [(need, fails[need][1]) for need in needs if fails[need][0]]


def _refuse_unmet(who: str, needs, cfg: Config, centralized: bool, fix: str) -> None:
    unknown = sorted(set(needs) - set(NEEDS))
    _require(not unknown, f"{who} requires {unknown[0] if unknown else ''!r}, which is not a need qgm-ray "
                          f"knows; choose from {', '.join(NEEDS)}")
    for need, why in unmet_needs(cfg, needs, centralized):
        raise ConfigError(f"{who} needs {NEEDS[need]}, but {why}; {fix}")


def _validate_compression(cfg: Config, rule) -> None:
    """compression.*: each key's range once (COMPRESSION_CHECKS, the compressors' checks); the compressor built once; a
    run whose exchange cannot be compressed (CHOCO_NEEDS) is refused in one line. A rule or
    a compressor declaring `requires` (NEEDS' names) is refused where its needs fail."""
    from qgm_ray.compression.options import check_keep, check_levels, check_unbiased

    c = cfg.compression
    for key, (ok, allowed) in COMPRESSION_CHECKS.items():
        value = getattr(c, key)
        _require(ok(value), f"compression.{key} must be {allowed}, got {_short(value)}")
    # A compressor knob set here is checked whichever op runs (the op's own check, written once
    # in qgm_ray.compression), though only the ops that read it use it.
    for key, check in (("keep", check_keep), ("levels", check_levels), ("unbiased", check_unbiased)):
        if getattr(c, key) is not None:
            check(getattr(c, key))
    _require(len(c.warmup_keep) >= 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
                                             for v in c.warmup_keep),
             f"compression.warmup_keep must be a non-empty list of fractions in (0, 1], got {_short(c.warmup_keep)}")
    _require(c.warmup_epochs == 0 or c.warmup_epochs < cfg.schedule.epochs,
             f"compression.warmup_epochs={c.warmup_epochs:g} must be smaller than schedule.epochs={cfg.schedule.epochs:g}")
    centralized = bool(getattr(rule, "centralized", False))
    _refuse_unmet(f"algorithm.name={cfg.algorithm.name}", getattr(rule, "requires", ()), cfg, centralized,
                  "choose a run that provides it or another rule")
    if c.op == "none":
        return
    from qgm_ray.compression import check_compressor, compressor_options, make_compressor
    from qgm_ray.plugins import is_reference
    comp = make_compressor(c.op, **c.options())
    if is_reference(c.op):   # a plug-in's contract, tried on a small block before anything starts
        check_compressor(comp)
    _require(c.warmup_epochs == 0 or "keep" in compressor_options(c.op),
             f"compression.warmup_epochs={c.warmup_epochs:g} steps `keep`, which compression.op={c.op} does not "
             f"read; set compression.warmup_epochs=0")
    _refuse_unmet(f"compression.op={c.op} (CHOCO-Gossip keeps s = sum_j W_ij x_hat_j)", CHOCO_NEEDS, cfg,
                  centralized, "choose a static undirected graph and a gossip rule, or compression.op=none")
    _refuse_unmet(f"compression.op={c.op}", getattr(comp, "requires", ()), cfg, centralized,
                  "choose a run that provides it or another compression.op")


def _validate_dashboard_host(cfg: Config) -> None:
    """ray.dashboard_host is where a Ray this process starts binds its dashboard: an address of
    this machine. Ray itself takes a minute to give up on a wrong one and then blames missing
    packages; binding a socket there says it at once (and sends nothing anywhere)."""
    import os
    import socket

    host = cfg.ray.dashboard_host
    if cfg.backend != "ray" or cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return   # joining a cluster: its dashboard is already where it is
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"ray.dashboard_host={host!r} is not an address of this machine ({e.strerror or e}); "
                          "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None


def _validate_tune(cfg: Config) -> None:
    base = Config().to_dict()
    tc = cfg.tune
    _require(1 <= tc.num_samples <= MAX_TRIALS,
             f"tune.num_samples must be in [1, {MAX_TRIALS:,}], got {_short(tc.num_samples)}")
    shape = tune_grid.problem(tc.grid)
    _require(shape is None, shape)
    _require(tc.num_samples * tune_grid.count(tc.grid) <= MAX_TRIALS,
             f"tune.grid with tune.num_samples={tc.num_samples} makes more than {MAX_TRIALS:,} trials "
             f"(grid points x num_samples); at most {MAX_TRIALS:,} in one sweep")
    for key, values in tc.grid.items():
        if tune_grid.is_conditional(key, values):
            # A section's branches: the key is a whole section, each key under it a config key.
            _require(isinstance(base.get(key), dict),
                     f"tune.grid.{key}: branches (a list of mappings) go under a config section "
                     f"({', '.join(k for k, v in base.items() if isinstance(v, dict) and k != 'tune')}), "
                     f"not {key!r}")
            for sub in tune_grid.keys({key: values}):
                _check_tune_key("grid", sub, base)
        else:
            _check_tune_key("grid", key, base)
            _require(isinstance(values, list) and len(values) > 0,
                     f"tune.grid.{key} must be a non-empty list of values, got {values!r}")
    for key, values in tc.search.items():
        _check_tune_key("search", key, base)
        _validate_search(key, values)
    _require(tc.metric in TUNE_METRICS,
             f"tune.metric={tc.metric!r} is not a reported metric; choose one of {', '.join(TUNE_METRICS)}")
    _require(tc.max_concurrent_trials >= 0,
             f"tune.max_concurrent_trials must be >= 0 (0: as many as resources allow), got {tc.max_concurrent_trials}")
    _require(tc.grace_period_evals >= 1, f"tune.grace_period_evals must be >= 1, got {tc.grace_period_evals}")


def _check_tune_key(section: str, key: str, base: dict) -> None:
    try:
        # `<section>.options.<knob>`: a rule's, model's, dataset's or graph's own option,
        # checked when each trial's config is built (tune.check_trials).
        parts = key.split(".")
        if not (len(parts) == 3 and parts[1] == "options" and isinstance(base.get(parts[0]), dict)
                and "options" in base[parts[0]]):
            get_dotted(base, key)
    except (KeyError, TypeError):
        raise ConfigError(f"tune.{section}: {key!r} is not a config key (use dotted keys like data.alpha)") from None


def _validate_search(key: str, spec: Any) -> None:
    usage = (f"tune.search.{key} must be {{uniform|loguniform: [lo, hi]}} (numbers, lo < hi), "
             f"{{randint: [lo, hi]}} (integers) or {{choice: [v1, v2, ...]}}, got {spec!r}")
    _require(isinstance(spec, dict) and len(spec) == 1
             and next(iter(spec)) in ("uniform", "loguniform", "choice", "randint"), usage)
    (kind, arg), = spec.items()
    if kind == "choice":
        _require(isinstance(arg, list) and len(arg) > 0, usage)
        return
    num = int if kind == "randint" else (int, float)
    _require(isinstance(arg, list) and len(arg) == 2
             and all(isinstance(x, num) and not isinstance(x, bool) and math.isfinite(x) for x in arg)
             and arg[0] < arg[1], usage)
    _require(kind != "loguniform" or arg[0] > 0, f"tune.search.{key}: loguniform needs lo > 0, got {arg!r}")


def _validate_slowmo(a: AlgorithmConfig) -> None:
    from qgm_ray.algorithms.slowmo import SLOWMO_ALGORITHMS

    _require(isinstance(a.slowmo_tau, int) and not isinstance(a.slowmo_tau, bool) and a.slowmo_tau >= 0,
             f"algorithm.slowmo_tau must be an integer >= 0 (rounds between outer steps; 0 = off), got {a.slowmo_tau!r}")
    _require(0 <= a.slowmo_beta < 1, f"algorithm.slowmo_beta must be in [0, 1), got {a.slowmo_beta}")
    _require(a.slowmo_alpha > 0, f"algorithm.slowmo_alpha must be > 0, got {a.slowmo_alpha}")
    _require(a.slowmo_tau == 0 or a.name in SLOWMO_ALGORITHMS,
             f"algorithm.slowmo_tau={a.slowmo_tau} needs algorithm.name one of {', '.join(SLOWMO_ALGORITHMS)} "
             f"(the official code's SlowMo is its decentralized SGD's), got {a.name!r}; or set algorithm.slowmo_tau=0")


def validate_against_data(cfg: Config, partition_sizes: list[int]) -> None:
    """Rules that need the partition: a client must hold at least one full batch."""
    smallest = min(partition_sizes)
    _require(cfg.data.batch_size <= smallest,
             f"data.batch_size={cfg.data.batch_size} is larger than the smallest client's data ({smallest} samples); "
             f"lower data.batch_size, raise data.alpha or use fewer clients")
