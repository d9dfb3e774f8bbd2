"""The run configuration's keys: a dataclass per section, each field with its type, its default
and (the comment on its line, which `config --keys` prints) what it means; and the closed sets
of values some keys take. Building a Config from a dict and checking it are the package's
other modules' jobs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Union


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
    """The simulated time of the system the run models (qgm_ray/clock/): metrics.csv's
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
    """Experiment trackers (qgm_ray/tracking/): every metrics.csv row and the resolved config,
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
