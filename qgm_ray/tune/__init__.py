"""Ray Tune sweeps: one trial = one full decentralized run (`qgm_ray.runner.run.run`) in its own directory.

The config's `tune:` section declares a grid over dotted config keys (`tune.grid_search`), where
a config section may hold conditional branches (`qgm_ray.grid`: Tune's grid_search over a list
of dicts), and optionally sampled keys (`tune.loguniform`, ...); every trial merges its values
over the sweep's config and trains. Each evaluation row goes to `tune.report`, so ASHA can stop bad
trials early and the dashboard shows progress; when the run ends, one last report carries its
`status` (completed | diverged) and final / best accuracy. A diverged run is a result, not an
error; an exception in a run is a Tune error (status failed).

Sweep directory (default `runs/<name>-<timestamp>/`):

    config.yaml       the resolved config, tune: section included (`--resume` reads it)
    tune/             Tune's experiment state (`Tuner.restore` reads it)
    tune.seal         the keyed digest of tune/ (qgm_ray.seal): `--resume` loads only a state
                      this user's qgm-ray wrote, since Tune's state is pickles
    trials/<trial>/   each trial's run directory: config.yaml, metrics.csv, summary.json, ...
    results.csv, histories.csv, partitions.csv, table.md, *.png   (qgm_ray.report)

Resources: with `backend: local` a trial is one process holding one CPU (or one GPU when the
run is on CUDA). With `backend: ray` a trial reserves, through a PlacementGroupFactory, one
bundle for itself (the trial process, which also hosts the engine's Coordinator) and one bundle
per ClientActor; Tune schedules the trial with `placement_group_capture_child_tasks=True`, so
the actors the engine creates land in the trial's own bundles and concurrent trials can never
starve each other of the resources their actors need. A finished trial's process goes to the
next trial asking for the same bundles (Tune's `reuse_actors`), and on Ray its coordinator and
ClientActors with it (`ray.reuse_actors`, engine/crew.py): the trial starts without new
processes importing torch.

This package holds the driver (run_sweep). names.py holds the sweep directory's names,
space.py the search space and a trial's config, resources.py a trial's bundles, checks.py the
trials' checks before the sweep starts, trainable.py the trainable (one trial), progress.py
the progress lines, sealing.py the seal of Tune's state, stopping.py the stop signals,
results.py the results of a sweep.
"""
from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from qgm_ray import grid as tune_grid
from qgm_ray import tracking
from qgm_ray.command import command
from qgm_ray.config import Config, config_dict, dump_yaml, from_dict
from qgm_ray.errors import ConfigError
# Every name of the module this package was stays one of its names (`X as X`): callers, and
# the Tune state of a sweep that module wrote, which names its functions by module, find them.
from qgm_ray.tune.checks import check_trials
from qgm_ray.tune.names import EXPERIMENT, FINISHED as FINISHED, SCHEDULER_STOP as SCHEDULER_STOP, TRIALS as TRIALS
from qgm_ray.tune.progress import _mark_scheduler_stop as _mark_scheduler_stop, _pct as _pct, _progress_callback
from qgm_ray.tune.resources import _resources_fn, check_fits, trial_bundles
from qgm_ray.tune.results import _trial_status as _trial_status, _tune_statuses, _write_results
from qgm_ray.tune.sealing import SEAL as SEAL, SEAL_EVERY_S as SEAL_EVERY_S, seal_state, verify_state
from qgm_ray.tune.space import (
    _SHORT as _SHORT,
    _grid_search as _grid_search,
    _sampler as _sampler,
    _trial_name,
    count_trials,
    describe_params,
    grid_keys,
    grid_points,
    param_space,
    trial_config,
    trial_params,
)
from qgm_ray.tune.stopping import _SweepSignals
from qgm_ray.tune.trainable import (
    _finite as _finite,
    _prepare_trial_dir as _prepare_trial_dir,
    _worst as _worst,
    run_trial,
)


def _init_ray(cfg: Config, log: Callable[[str], None]) -> bool:
    """Connect to ray.address / $RAY_ADDRESS, else start a local Ray. True if we started one.
    Through ray_setup.connect, as a run does: loopback only, our signal handlers kept during
    Ray's start, the reaper for its processes, Ray's console lines in its logs, our own line
    for the dashboard (no coloured INFO line of Ray's). Plug-in code goes to every process of
    the sweep, trials included, on every node, as the job's runtime_env."""
    from qgm_ray.engine import crew
    from qgm_ray.engine.ray_setup import connect
    from qgm_ray.plugins import job_runtime_env
    crew.release()   # actors an earlier run of this process kept would hold the trials' CPUs
    return connect(cfg, log, runtime_env=job_runtime_env(cfg))


def _autoscales() -> bool:
    try:
        from qgm_ray.engine.ray_setup import cluster_autoscales
        return cluster_autoscales()
    except ImportError:
        return False


def _absolute_paths(d: dict) -> dict:
    # Trials run in Tune's working directories, not ours: relative data paths (and a local MLflow
    # store's) must not move.
    root = d["data"]["root"]
    if root and not os.path.isabs(root):
        d["data"]["root"] = os.path.abspath(root)
    mlflow = d["tracking"]["mlflow"]
    mlflow["tracking_uri"] = tracking.absolute_uri(mlflow["tracking_uri"])
    return d


def default_sweep_dir(name: str) -> Path:
    from qgm_ray.outputs import default_run_dir
    return default_run_dir(name)


def run_sweep(cfg: Config, output_dir: Optional[str | Path] = None, resume_dir: Optional[str | Path] = None,
              log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the sweep of `cfg.tune`; write results.csv, table.md and figures.

    Returns {"sweep_dir", "results" (DataFrame, a row per trial), "files", "wall_seconds",
    "complete" (False when interrupted: resume with `--resume sweep_dir`)}.
    """
    import logging

    import ray
    from ray import tune


    # Tune's own reporter prints a table every few seconds; with the legacy reporter at verbose=0
    # it is silent and our callback prints one line per trial instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    t0 = time.time()
    if resume_dir is not None:
        sweep_dir = Path(resume_dir).resolve()
        if not (sweep_dir / "config.yaml").is_file() or not tune.Tuner.can_restore(str(sweep_dir / EXPERIMENT)):
            raise ConfigError(f"--resume {sweep_dir}: not a sweep directory (needs config.yaml and {EXPERIMENT}/)")
        verify_state(sweep_dir)   # Tuner.restore unpickles the state: nothing another hand wrote
        base = config_dict(sweep_dir / "config.yaml")
        cfg = from_dict(base)  # the sweep's own config, whatever --config says
        log(f"resuming sweep {sweep_dir} (its own config.yaml)")
    else:
        if not cfg.tune.grid and not cfg.tune.search:
            raise ConfigError("tune: the config has no tune.grid or tune.search section; nothing to sweep "
                              "(see configs/tune_heterogeneity.yaml)")
        base = _absolute_paths(cfg.to_dict())
        cfg = from_dict(base)
        check_trials(base, cfg.tune, log)
        sweep_dir = Path(output_dir or cfg.output_dir or default_sweep_dir(cfg.name)).resolve()
        if (sweep_dir / EXPERIMENT).exists():
            raise ConfigError(f"--output-dir {sweep_dir} already holds a sweep; use `{command()} tune --resume "
                              f"{sweep_dir}` to continue it, or another directory")
        from qgm_ray.outputs import check_new_run_dir
        from qgm_ray.seal import load_key
        check_new_run_dir(sweep_dir, resume_cmd=f"{command()} tune --resume")
        load_key(create=True)   # the seal of Tune's state: a key that cannot be made fails now

    from qgm_ray.handler_guard import HandlerGuard
    from qgm_ray.signals import SIGNALS

    tc = cfg.tune
    total = count_trials(tc)
    signals = _SweepSignals(sweep_dir, new=resume_dir is None, log=log)
    signals.install()   # a signal while Ray starts: one line, 128 + its number, at once
    started_ray, guard = False, None
    try:
        started_ray = _init_ray(cfg, log)
        signals.install()       # Ray's core worker put C++ handlers in place when it connected
        guard = HandlerGuard(SIGNALS)  # and ray.shutdown() resets SIGTERM behind Python's back
        cluster = ray.cluster_resources()
        check_fits(base, tc, cluster, autoscaling=not started_ray and _autoscales())
        if resume_dir is None:
            # Only now, when the sweep can start: a config error (a trial bigger than the
            # cluster) left config.yaml behind, and with it a directory neither a rerun nor
            # `tune --resume` would take.
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / "config.yaml").write_text(dump_yaml(cfg))
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=base, sweep_dir=str(sweep_dir)),
            _resources_fn(base, cluster))
        progress = _progress_callback(total, log, sweep_dir)
        if resume_dir is not None:
            # restart_errored: a crashed trial gets a fresh start; finished ones are kept as they are.
            tuner = tune.Tuner.restore(str(sweep_dir / EXPERIMENT), trainable,
                                       resume_unfinished=True, restart_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space=param_space(tc),
                               tune_config=_tune_config(cfg), run_config=_run_config(sweep_dir, progress))
        log(f"sweep: {total} trials ({_space_text(tc)}), backend={cfg.backend}, scheduler={tc.scheduler}, "
            f"Ray resources {_resources_text()}; directory {sweep_dir}")
        # Tune's own lines on an interruption ("Stop signal received", "Resume experiment with:
        # Tuner.restore(...)", the wrong command for this program) and on a resume ("Failed to
        # fetch metrics ... FileNotFoundError" for trials that had not started): ours say it.
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        grid = tuner.fit()
        statuses = _tune_statuses(grid)
        # A trial Tune had created but not started when a stop came has no config or path yet:
        # it is counted below as not done.
        results = [(trial_params(r.config), Path(r.path).name, r.metrics or {}, r.error)
                   for r in grid if r.config is not None and r.path is not None]
    except BaseException:
        signals.restore()
        raise
    finally:
        if started_ray:
            ray.shutdown()   # a second signal here still exits at once, with the hint
        if guard is not None:
            guard.stop()
        seal_state(sweep_dir)   # Tune has written its last state
    try:
        out = _write_results(sweep_dir, base, tc, total, results, statuses, t0, log)
    finally:
        signals.restore()
    if not out["complete"]:
        # Tune ends a sweep early only on a stop signal; SIGTERM passes through our handler,
        # Ctrl-C straight to Tune's.
        out["signal"] = signals.signum or signal.SIGINT
    return out


def _tune_config(cfg: Config):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    tc = cfg.tune
    if tc.scheduler == "asha":
        # One Tune iteration = one evaluation; +2 so the final report never hits max_t early.
        max_t = math.ceil(cfg.schedule.epochs / cfg.eval.every_epochs) + 2
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                  grace_period=min(tc.grace_period_evals, max_t), reduction_factor=3)
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(metric=tc.metric, mode=tc.mode, scheduler=scheduler, num_samples=tc.num_samples,
                           max_concurrent_trials=tc.max_concurrent_trials or None,
                           # A new trial process pays seconds of imports (torch) before its first
                           # round, and on Ray its actors as many again: keep them for the next trial.
                           reuse_actors=True,
                           trial_name_creator=_trial_name, trial_dirname_creator=_trial_name)


def _run_config(sweep_dir: Path, progress):
    from ray import tune
    return tune.RunConfig(name=EXPERIMENT, storage_path=str(sweep_dir), verbose=0, callbacks=[progress],
                          failure_config=tune.FailureConfig(max_failures=0))


def _space_text(tc) -> str:
    parts = [f"{k} x{tune_grid.count({k: v})}" + (f" ({len(v)} branches)" if tune_grid.is_conditional(k, v) else "")
             for k, v in tc.grid.items()]
    parts += [f"{k} ~ {next(iter(s))}" for k, s in tc.search.items()]
    if tc.num_samples > 1:
        parts.append(f"{tc.num_samples} samples")
    return ", ".join(parts)


def _resources_text() -> str:
    import ray
    r = ray.cluster_resources()
    return ", ".join(f"{k} {v:g}" for k, v in sorted(r.items()) if k in ("CPU", "GPU"))


__all__ = ["run_sweep", "param_space", "grid_points", "grid_keys", "trial_params", "count_trials", "trial_config", "trial_bundles",
           "run_trial", "describe_params"]
