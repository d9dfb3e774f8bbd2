"""The checks of a built Config: every rule that holds without the data (`validate`) and those
that need the partition (`validate_against_data`), each a ConfigError line before anything
starts."""
from __future__ import annotations

import math
from typing import Optional

from qgm_ray.config.layers import get_dotted
from qgm_ray.config.limits import (
    MAX_ELASTIC_STEPS,
    MAX_EPOCHS,
    MAX_EVALUATIONS,
    MAX_MILESTONES,
    MAX_NAME_LENGTH,
    MAX_SEED,
    NAME_PATTERN,
    POSITIVE_INT_DATA_OPTIONS,
)
from qgm_ray.config.needs import ASYNC_NEEDS, CHOCO_NEEDS, _refuse_unmet
from qgm_ray.config.refusal import _require, _short
from qgm_ray.config.schema import CHOICES, AlgorithmConfig, Config
from qgm_ray.config.tune_checks import _validate_tune
from qgm_ray.errors import ConfigError


def validate(cfg: Config) -> None:
    """Every rule that can be checked without loading data. Raises ConfigError."""
    # Imported here: these registries import torch/networkx, and config parsing should not.
    from qgm_ray.algorithms import make_algorithm_from_config
    from qgm_ray.algorithms.hparams import check_shared
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


def _validate_clock(cfg: Config, rule) -> None:
    """The clock's keys; a trace file is read now (qgm_ray/clock/trace.py), so a bad one is one line
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


# (check, allowed values) per key of the exchange's own (the compressors check theirs).
COMPRESSION_CHECKS = {
    "consensus_lr": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0 epochs (0: no warm-up)"),
}


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
