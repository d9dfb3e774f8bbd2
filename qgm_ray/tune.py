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
"""
from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from qgm_ray import grid as tune_grid
from qgm_ray import tracking
from qgm_ray.command import command
from qgm_ray.config import Config, config_dict, dump_yaml, from_dict, trial_dict
from qgm_ray.errors import ConfigError

EXPERIMENT = "tune"   # Tune's experiment directory inside the sweep directory
TRIALS = "trials"     # our run directories inside the sweep directory
SCHEDULER_STOP = "scheduler_stopped"   # marker file in a trial directory (see _mark_scheduler_stop)
FINISHED = ("completed", "diverged")   # a run's outcomes: a trial with either is done
SEAL = "tune.seal"    # the keyed digest of EXPERIMENT, next to it (see seal_state)
SEAL_EVERY_S = 1.0    # while Tune runs, the state is resealed at most this often

# Short labels for trial names and progress lines.
_SHORT = {"algorithm.name": "", "data.alpha": "alpha", "seed": "seed", "algorithm.lr": "lr",
          "topology.name": "", "topology.n_clients": "n", "compression.op": ""}


# ---------------------------------------------------------------- search space

def _sampler(key: str, spec: dict):
    from ray import tune
    (kind, arg), = spec.items()
    if kind == "choice":
        return tune.choice(list(arg))
    lo, hi = arg
    if kind == "uniform":
        return tune.uniform(lo, hi)
    if kind == "loguniform":
        return tune.loguniform(lo, hi)
    if kind == "randint":
        return tune.randint(lo, hi + 1)  # [lo, hi] inclusive, as written in the config
    raise ConfigError(f"tune.search.{key}: unknown distribution {kind!r}")


def _grid_search(key: str, values: list):
    """A grid key as Tune's search space: a conditional key's branches are grid_search over
    their dicts, each branch's lists grid_search again (Tune expands them inside the branch)."""
    from ray import tune
    if not tune_grid.is_conditional(key, values):
        return tune.grid_search(list(values))
    return tune.grid_search([{sub: tune.grid_search(list(v)) if isinstance(v, list) else v
                              for sub, v in branch.items()} for branch in values])


def param_space(tc) -> dict:
    """{key: grid_search | sampler}: Tune expands the grid, samples the rest. A trial's config
    comes back with a conditional key's branch as a dict: `trial_params` makes it dotted keys."""
    space = {k: _grid_search(k, v) for k, v in tc.grid.items()}
    space.update({k: _sampler(k, spec) for k, spec in tc.search.items()})
    return space


def trial_params(config: dict) -> dict:
    """A trial's values as dotted keys, from the config Tune gives the trial."""
    return tune_grid.flatten(config)


def grid_points(tc) -> list[dict]:
    """Every grid combination as dotted keys (without the sampled keys)."""
    return tune_grid.points(tc.grid)


def grid_keys(tc) -> list[str]:
    """Every dotted key a grid point or a sample sets: the parameter columns of results.csv."""
    return tune_grid.keys(tc.grid) + [k for k in tc.search if k not in tc.grid]


def count_trials(tc) -> int:
    return tune_grid.count(tc.grid) * tc.num_samples


def trial_config(base: dict, params: dict) -> Config:
    return from_dict(trial_dict(base, params))


def describe_params(params: dict) -> str:
    """`qg_dsgdm_n alpha=0.1 seed=2`: the trial's values, shortest readable form."""
    parts = []
    for key, value in params.items():
        label = _SHORT.get(key, key.rsplit(".", 1)[-1])
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{label}={text}" if label else text)
    return " ".join(parts)


def _trial_name(trial) -> str:
    safe = describe_params(trial_params(trial.config)).replace(" ", "_").replace("=", "")
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in safe)
    return f"{safe}_{trial.trial_id}"


# ---------------------------------------------------------------- resources

def trial_bundles(cfg: Config, cluster: Optional[dict] = None) -> list[dict]:
    """Placement-group bundles of one trial. The first bundle is the trial process itself.

    backend ray: the engine's Coordinator asks for no CPU (it fits in the first bundle); each
    ClientActor asks for what qgm_ray.engine.ray_setup.actor_resources gives on this cluster
    with the trial process's CPUs held back (the engine inside the trial computes the same), so
    the trial reserves one bundle per actor of that size. `cluster`: the Ray cluster's resources.
    """
    cluster = cluster or {}
    cluster_gpus = cluster.get("GPU", 0.0)
    wants_gpu = cfg.device == "cuda" or (cfg.device == "auto" and cluster_gpus > 0)
    if cfg.backend == "local":
        return [{"CPU": 1.0, "GPU": 1.0}] if wants_gpu else [{"CPU": 1.0}]
    from qgm_ray.build import max_clients
    from qgm_ray.engine.ray_setup import TRIAL_PROCESS_CPUS, actor_resources
    plan = actor_resources(cfg, max_clients(cfg), cluster, reserved_cpus=TRIAL_PROCESS_CPUS)
    actor = {"CPU": plan["num_cpus"], **({"GPU": plan["num_gpus"]} if plan["num_gpus"] > 0 else {})}
    # The trial process only drives the coordinator and writes outputs: half a CPU is plenty.
    # The first ClientActor evaluates the averaged model: no bundle of its own.
    return [{"CPU": TRIAL_PROCESS_CPUS}] + [dict(actor) for _ in range(plan["actors"])]


def check_fits(base: dict, tc, cluster: dict, autoscaling: bool = False) -> None:
    """A trial bigger than the whole cluster would wait forever (Tune only warns): refuse it."""
    if autoscaling:
        return
    for point in grid_points(tc):
        need: dict = {}
        for b in trial_bundles(trial_config(base, point), cluster):
            for r, v in b.items():
                need[r] = need.get(r, 0.0) + v
        short = {r: v for r, v in need.items() if v > cluster.get(r, 0.0) + 1e-6}
        if short:
            have = ", ".join(f"{cluster.get(r, 0.0):g} {r}" for r in short)
            raise ConfigError(
                f"trial {describe_params(point)} needs {', '.join(f'{v:g} {r}' for r, v in need.items())} "
                f"(backend={base['backend']}: trial process + ClientActors) but the Ray cluster "
                f"has {have}; set ray.cpus_per_actor: auto, lower ray.gpus_per_client, raise ray.num_cpus, or join "
                f"a bigger cluster (ray.address)")


def _resources_fn(base: dict, cluster: dict) -> Callable:
    def resources(params: dict):
        from ray import tune
        params = trial_params(params)
        return tune.PlacementGroupFactory(trial_bundles(trial_config(base, params), cluster))
    return resources


# ---------------------------------------------------------------- the trainable

def _worst(mode: str) -> float:
    return 0.0 if mode == "max" else float("inf")


def _prepare_trial_dir(path: Path) -> bool:
    """A trial restarted by Tuner.restore finds its old run directory: resume from its own
    checkpoint when it has one, else start over (metrics.csv is appended, so it must go)."""
    from qgm_ray.runner.checkpoints import CheckpointStore
    if not path.exists():
        return False
    if CheckpointStore.of(path).list() and (path / "config.yaml").is_file():
        return True
    shutil.rmtree(path)
    return False


def run_trial(params: dict, base: dict, sweep_dir: str) -> None:
    """Tune function trainable: one run, every evaluation reported, then the outcome."""
    import torch
    from ray import tune

    from qgm_ray.runner import run as runner

    params = trial_params(params)
    cfg = trial_config(base, params)
    cfg.progress = False
    if cfg.backend == "local":
        torch.set_num_threads(cfg.compute.torch_threads)
    else:   # the sweep's next trial in this process takes this one's actors (engine/crew.py)
        cfg.ray.reuse_actors = True
    name = tune.get_context().get_trial_name()
    path = Path(sweep_dir) / TRIALS / name
    resume = _prepare_trial_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    metric, mode = base["tune"]["metric"], base["tune"]["mode"]
    best = {"acc": float("-inf")}
    last = {}

    def on_eval(row: dict) -> None:
        best["acc"] = max(best["acc"], row["test_accuracy"])
        last.clear()
        last.update(row)
        # Same keys in every report (Tune's progress.csv takes its header from the first one).
        tune.report({**row, "status": "running", "final_test_accuracy": row["test_accuracy"],
                     "best_test_accuracy": best["acc"]})

    with open(path / "log.txt", "a") as logf:
        def log(msg: str) -> None:
            logf.write(msg + "\n")
            logf.flush()
        log(f"trial {name}: {describe_params(params)} (qgm_ray from {Path(runner.__file__).parents[1]})")
        summary = runner.run(cfg, path, resume=resume, on_eval=on_eval, log=log, own_files=("log.txt",))

    final = {**last, "status": summary["status"],
             "final_test_accuracy": summary["final_test_accuracy"],
             "best_test_accuracy": summary["best_test_accuracy"],
             "wall_seconds": summary["wall_seconds"], "round": summary["rounds"]}
    for key in ("final_test_accuracy", "best_test_accuracy", "test_accuracy"):
        if final.get(key) is None:
            final[key] = float("nan")
    if summary["status"] != "completed" or metric not in final or not _finite(final[metric]):
        final[metric] = _worst(mode)  # schedulers and best-trial selection must not prefer it
    tune.report(final)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- progress lines

def _mark_scheduler_stop(sweep_dir: Path, trial) -> None:
    """A marker in the trial's run directory: stopped early by the scheduler (ASHA), on purpose.
    Without it a trial that did not finish was interrupted; the marker outlives a resume."""
    path = Path(sweep_dir) / TRIALS / _trial_name(trial)
    if path.is_dir():
        (path / SCHEDULER_STOP).write_text("stopped early by the scheduler\n")


def _progress_callback(total: int, log: Callable[[str], None], sweep_dir: Path):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per finished trial (Tune's own reporter is off: verbose=0). Tuner.restore
        brings back this same object (pickled with the run config): `setup` restarts the clock."""

        t0 = time.time()

        def setup(self, **info):
            self.t0 = time.time()

        def _line(self, trials, trial, outcome: str) -> None:
            # `trial` itself is not marked TERMINATED / ERROR yet when the callback runs.
            done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)
            elapsed = time.time() - self.t0
            log(f"[{done:>{len(str(total))}}/{total}] {describe_params(trial_params(trial.config))}: {outcome}"
                f"  ({elapsed / 60:.1f} min elapsed)")

        def on_trial_complete(self, iteration, trials, trial, **info):
            # Tune calls this for a trial that ended (its last report) or that the scheduler
            # stopped, never for one cut short by an interruption (Tune just ends those).
            r = trial.last_result or {}
            status = r.get("status")
            if status not in FINISHED:
                _mark_scheduler_stop(sweep_dir, trial)
            if status == "completed":
                outcome = (f"completed, final {_pct(r.get('final_test_accuracy'))} best "
                           f"{_pct(r.get('best_test_accuracy'))}, {r.get('wall_seconds', float('nan')):.0f} s")
            elif status == "diverged":
                outcome = (f"DIVERGED at round {r.get('round')} (last evaluation before: "
                           f"{_pct(r.get('final_test_accuracy'))})")
            else:
                outcome = (f"stopped early by the scheduler at epoch {r.get('epoch', float('nan')):g}, "
                           f"test accuracy {_pct(r.get('test_accuracy'))}")
            self._line(trials, trial, outcome)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trials, trial, f"FAILED (see {trial.path}/error.txt)")

        def on_step_end(self, iteration, trials, **info):
            # Tune has just saved its state (it does so at the end of a step).
            now = time.monotonic()
            if now - getattr(self, "sealed_at", 0.0) >= SEAL_EVERY_S:
                self.sealed_at = now
                seal_state(sweep_dir)

    return Progress()


def seal_state(sweep_dir: Path) -> bool:
    """Seal Tune's state as it is now. Tune saves it between steps of its loop, and the driver
    reseals after each step (throttled), after fit and before an immediate exit: a sweep killed
    outright (SIGKILL) resumes unless Tune wrote in the last moment before."""
    from qgm_ray import seal
    state = Path(sweep_dir) / EXPERIMENT
    if not state.is_dir():
        return False
    try:
        key = seal.load_key(create=False)
    except seal.SealError:
        return False
    return seal.seal(state, Path(sweep_dir) / SEAL, key)


def verify_state(sweep_dir: Path) -> None:
    """Before Tune unpickles anything of a sweep to resume: SealError (one line) unless its state
    is what this user's qgm-ray sealed."""
    from qgm_ray import seal
    seal.verify(Path(sweep_dir) / EXPERIMENT, Path(sweep_dir) / SEAL, f"--resume {sweep_dir}")


def _pct(x) -> str:
    return f"{100 * float(x):.2f}%" if _finite(x) else "n/a"


# ---------------------------------------------------------------- driver

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


def check_trials(base: dict, tc, log: Callable[[str], None] = print) -> None:
    """Every grid point (and the ends of every sampled range) must be a valid config, and for
    offline data the partition must fit the batch size: fail now, not 20 minutes in."""
    from qgm_ray import data as qdata
    from qgm_ray.runner import run as runner

    probes = [{}]
    for key, spec in tc.search.items():
        (kind, arg), = spec.items()
        probes += [{key: v} for v in (arg if kind == "choice" else arg[:2])]
    # Offline data and plug-ins (whose model output is checked with the data) are prepared now.
    offline = base["data"]["name"] in getattr(qdata, "_OFFLINE", {}) or ":" in base["data"]["name"] \
        or ":" in base["model"]["name"]
    trials = []
    # Every trial's config first: a bad one is refused before any data is prepared (written).
    for point in grid_points(tc):
        for probe in probes:
            params = {**point, **probe}
            try:
                trials.append((params, trial_config(base, params)))
            except ConfigError as e:
                raise ConfigError(f"trial {describe_params(params)}: {e}") from None
    if not offline:
        return
    seen = set()
    for params, cfg in trials:
        d = cfg.to_dict()
        key = repr((d["seed"], d["data"], d["topology"], d["elastic"],
                    d["model"] if ":" in d["model"]["name"] else None))   # a plug-in model: each one built
        if key not in seen:
            seen.add(key)
            try:
                runner.prepare(cfg, log=lambda m: None)
            except ConfigError as e:
                raise ConfigError(f"trial {describe_params(params)}: {e}") from None


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

    from qgm_ray.signals import HandlerGuard

    tc = cfg.tune
    total = count_trials(tc)
    signals = _SweepSignals(sweep_dir, new=resume_dir is None, log=log)
    signals.install()   # a signal while Ray starts: one line, 128 + its number, at once
    started_ray, guard = False, None
    try:
        started_ray = _init_ray(cfg, log)
        signals.install()       # Ray's core worker put C++ handlers in place when it connected
        guard = HandlerGuard()  # and ray.shutdown() resets SIGTERM behind Python's back
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


def _write_results(sweep_dir, base, tc, total, results, statuses, t0, log) -> dict:
    from qgm_ray import report

    rows = []
    for params, name, metrics, error in results:
        trial_dir = Path(sweep_dir) / TRIALS / name
        tune_status = statuses.get(metrics.get("trial_id"))
        status = _trial_status(tune_status, error, (trial_dir / SCHEDULER_STOP).exists(), metrics.get("status"))
        if status in FINISHED and not trial_dir.is_dir():
            log(f"trial {name}: its run directory {trial_dir} is gone; its row comes from Tune's last report")
        rows.append(report.trial_row(sweep_dir, base, Path(TRIALS) / name, params, metrics, status))
    df = report.results_frame(rows, grid_keys(tc))
    files = report.write_sweep_report(sweep_dir, df)
    wall = time.time() - t0
    # Not done: trials cut short, and grid points Tune had not even created yet.
    unfinished = int((df["status"] == "interrupted").sum()) + max(0, total - len(df))
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    if total > len(df):
        counts["not started"] = total - len(df)
    log(f"sweep {'interrupted' if unfinished else 'finished'} after {wall / 60:.1f} min: "
        + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if unfinished:
        log(f"{unfinished} of {total} trials not done; continue with: {command()} tune --resume {sweep_dir}")
    log(f"table: {sweep_dir / 'table.md'}")
    return {"sweep_dir": sweep_dir, "results": df, "files": files, "wall_seconds": wall,
            "complete": unfinished == 0}


class _SweepSignals:
    """SIGTERM, and every other stop signal of qgm_ray.signals, does what Ctrl-C does: Tune's
    graceful stop (it saves the experiment state, our driver then writes results.csv / table.md
    of what finished and prints `tune --resume`, and exits with 128 + the signal's number).
    Before Tune starts (Ray starting) a signal exits at once: nothing ran. A second signal exits
    at once with the resume hint. Tune installs its own SIGINT handler in fit() and, after the
    first Ctrl-C, puts back the one it found: ours, which aborts. Ray's processes are left to
    the reaper (engine/reaper.py)."""

    def __init__(self, sweep_dir: Path, new: bool, log: Callable[[str], None]):
        self.sweep_dir, self.new, self.log = sweep_dir, new, log
        self.previous: dict = {}
        self.signum: Optional[int] = None   # the signal, when not Ctrl-C (that goes to Tune's handler)

    def install(self) -> None:
        """Before Ray starts, and again after (its core worker installs C++ handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return
        from qgm_ray.signals import SIGNALS
        previous = {s: signal.signal(s, self._abort if s == signal.SIGINT else self._term) for s in SIGNALS}
        if not self.previous:
            self.previous = previous

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}

    def _term(self, signum, frame):
        self.signum = self.signum or signum
        signal.raise_signal(signal.SIGINT)   # whoever holds SIGINT now: Tune (graceful) or _abort

    def _abort(self, signum, frame):
        signum = self.signum or signum   # another stop signal arrives here as the SIGINT _term raised
        name = signal.Signals(signum).name
        if (self.sweep_dir / EXPERIMENT).exists():
            seal_state(self.sweep_dir)   # Tune's loop waits for this handler: its state is whole
            msg = (f"{name}: stopped at once; finished trials are kept; continue with: "
                   f"{command()} tune --resume {self.sweep_dir}")
        else:  # Tune had not started: take back the directory this sweep made, nothing ran
            if self.new:
                (self.sweep_dir / "config.yaml").unlink(missing_ok=True)
                try:
                    self.sweep_dir.rmdir()
                except OSError:
                    pass
            msg = f"{name}: stopped before the sweep started; nothing ran"
        print(msg, file=sys.stderr, flush=True)
        os._exit(128 + signum)


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


def _tune_statuses(grid) -> dict:
    """trial_id -> Tune status (TERMINATED, ERROR, PENDING, ...). ResultGrid keeps it private."""
    analysis = getattr(grid, "_experiment_analysis", None)
    return {t.trial_id: t.status for t in getattr(analysis, "trials", [])}


def _trial_status(tune_status: Optional[str], error, scheduler_stopped: bool = False,
                  reported: Optional[str] = None) -> str:
    """Status for a trial whose run directory holds no final summary.json. Tune marks TERMINATED
    a trial that ran to its end (its last report, `reported`, says how: completed or diverged;
    its directory may be gone since), one its scheduler stopped (ASHA: `stopped`) and one an
    interruption cut short; only the second has our marker (see _mark_scheduler_stop)."""
    if error is not None or tune_status == "ERROR":
        return "failed"
    if tune_status == "TERMINATED" and reported in FINISHED:
        return reported
    if tune_status == "TERMINATED" and scheduler_stopped:
        return "stopped"
    return "interrupted"


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
