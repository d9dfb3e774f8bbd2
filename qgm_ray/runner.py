"""One decentralized training run, whatever the engine: rounds, evaluation, outputs, resume.

The order matters for the user: every check that can fail (config, data, partition sizes,
topology) happens before the run directory is created or any actor starts.
"""
from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from qgm_ray import build
from qgm_ray.config import Config, dump_yaml, validate_against_data
from qgm_ray.engine.base import EngineFailure, round_bytes
from qgm_ray.engine.slowmo import outer_step_bytes
from qgm_ray.errors import ConfigError
from qgm_ray.outputs import RunDir, check_new_run_dir, default_run_dir
from qgm_ray.partition import write_partition_csv
from qgm_ray.schedule import LRSchedule, rounds_per_epoch

DIVERGENCE_LOSS = 1e3

# Keys whose change makes a checkpoint meaningless for --resume (replay would differ).
REPLAY_KEYS = ("seed", "data", "model", "topology", "algorithm", "schedule", "elastic")


@dataclass
class RunPlan:
    """Round arithmetic of a run, derived once from config and data."""
    rounds_per_epoch: int
    total_rounds: int
    eval_every: int
    lr: LRSchedule
    resize_at: dict = field(default_factory=dict)  # round -> n_clients
    checkpoint_every: int = 0

    @classmethod
    def make(cls, cfg: Config, n_train: int) -> "RunPlan":
        rpe = rounds_per_epoch(n_train, cfg.topology.n_clients, cfg.data.batch_size)
        lr = LRSchedule.from_config(cfg, rpe)
        resize = {max(1, round(e * rpe)): n for e, n in cfg.elastic.schedule}
        return cls(rpe, lr.total_rounds, max(1, round(cfg.eval.every_epochs * rpe)), lr, resize,
                   cfg.fault_tolerance.checkpoint_every)

    def stops(self, start: int) -> list[int]:
        """Round boundaries after `start` where the runner must regain control."""
        points = set(range(self.eval_every, self.total_rounds, self.eval_every)) | {self.total_rounds}
        points |= {r for r in self.resize_at if r < self.total_rounds}
        if self.checkpoint_every:
            points |= set(range(self.checkpoint_every, self.total_rounds, self.checkpoint_every))
        return sorted(p for p in points if p > start)


def replay_fingerprint(cfg: Config) -> str:
    d = cfg.to_dict()
    if cfg.algorithm.slowmo_tau == 0:
        # SlowMo off: its keys change nothing, and leaving them out keeps the checkpoints of
        # runs written before they existed resumable.
        for key in ("slowmo_tau", "slowmo_beta", "slowmo_alpha"):
            d["algorithm"].pop(key)
    if not d["algorithm"].get("options"):
        d["algorithm"].pop("options", None)   # as for SlowMo: runs from before the key stay resumable
    text = repr([(k, d[k]) for k in REPLAY_KEYS])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_engine(cfg: Config, ds, parts, log: Callable[[str], None]):
    if cfg.backend == "ray":
        from qgm_ray.engine.ray_engine import RayEngine  # Ray is imported only when used
        return RayEngine(cfg, ds, parts, log=log)
    from qgm_ray.engine.local import LocalEngine
    return LocalEngine(cfg, ds, parts, device=build.resolve_device(cfg))


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="round", dynamic_ncols=True,
                desc="training", leave=True)


def prepare(cfg: Config, log=print):
    """Load data and cut the partition; raises ConfigError on anything wrong. No side effects."""
    import torch

    # Data preprocessing (standardisation) reduces over the whole dataset; its last bits depend
    # on the intra-op thread count. A Tune trial or Ray worker starts with OMP_NUM_THREADS=1, a
    # shell does not: without this, main.py and a Tune trial of the same config trained on
    # data differing in the last bit, and their numbers drifted apart (0.73675 vs 0.7345).
    torch.set_num_threads(cfg.ray.torch_threads)
    check_device(cfg)
    ds = build.build_dataset(cfg)
    parts = build.build_partition(cfg, ds)
    validate_against_data(cfg, [len(p) for p in parts])
    try:  # model options only the data's shape can check (one model, only when options are set
        # or the model is a plug-in, whose output must be an nn.Module before any actor starts)
        if cfg.model.options or ":" in cfg.model.name:
            build.build_model(cfg, ds)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - any constructor error is a bad model.options
        raise ConfigError(f"model.name={cfg.model.name!r} with model.options={cfg.model.options}: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    log(f"data: {cfg.data.name} ({len(ds.train_x)} train / {len(ds.test_x)} test, "
        f"{ds.num_classes} classes), {cfg.data.partition} partition"
        + (f" alpha={cfg.data.alpha:g}" if cfg.data.partition == "dirichlet" else "")
        + f" over {len(parts)} clients, sizes {min(map(len, parts))}..{max(map(len, parts))}")
    return ds, parts


def _ray_initialized() -> bool:
    if "ray" not in sys.modules:  # importing Ray just to ask costs a second
        return False
    import ray
    return ray.is_initialized()


def check_device(cfg: Config) -> None:
    """device=cuda where it can be known now (local engine, or a Ray this process starts)."""
    import torch
    if cfg.device != "cuda" or torch.cuda.is_available():
        return
    joins_cluster = cfg.backend == "ray" and (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    if not joins_cluster:  # a cluster's GPUs are checked when the engine plans its resources
        raise ConfigError("device=cuda but torch sees no CUDA GPU on this machine; use device=auto "
                          "(GPU when there is one) or device=cpu")


def resume_hint(run_dir: RunDir) -> str:
    return f"python main.py --resume {run_dir.path}"


def run(cfg: Config, output_dir: Optional[str | Path] = None, *, resume: bool = False,
        on_eval: Optional[Callable[[dict], None]] = None, log: Callable[[str], None] = print,
        own_files: tuple = ()) -> dict:
    """Train; write outputs; return the summary. `on_eval(row)` sees every metrics row (Tune).
    `own_files`: names the caller has already put into output_dir (a Tune trial's log.txt)."""
    run_dir = RunDir(output_dir or cfg.output_dir or default_run_dir(cfg.name))
    if not resume:
        check_new_run_dir(run_dir.path, ignore=own_files)  # never write into another run's directory
    if cfg.backend == "ray":  # a wrong ray.address fails in seconds, before the data is made
        from qgm_ray.engine.ray_setup import probe_address, ray_address
        if ray_address(cfg) and not _ray_initialized():
            probe_address(ray_address(cfg))
    ds, parts = prepare(cfg, log)
    plan = RunPlan.make(cfg, len(ds.train_x))

    checkpoint = None
    if resume:
        checkpoint = run_dir.load_latest_checkpoint(log=log)
        if checkpoint is None:
            raise ConfigError(f"--resume {run_dir.path}: no readable checkpoint in {run_dir.checkpoints}")
        if checkpoint.get("fingerprint") != replay_fingerprint(cfg):
            raise ConfigError(f"--resume {run_dir.path}: the checkpoint was written with a different "
                              f"config ({', '.join(REPLAY_KEYS)} must match config.yaml)")
    stop_flag = StopSignals()
    with stop_flag:
        return _run(cfg, ds, parts, plan, run_dir, checkpoint, stop_flag, on_eval, log)


def _run(cfg, ds, parts, plan, run_dir, checkpoint, stop_flag, on_eval, log) -> dict:
    # The engine starts (and, on Ray, checks the cluster) before anything is written: a
    # cluster that cannot run this config fails with a ConfigError and no half-made run dir.
    engine = make_engine(cfg, ds, parts, log)
    stop_flag.reinstall()
    if stop_flag():  # a signal while Ray or the actors started: nothing to save yet
        engine.close()
        raise KeyboardInterrupt
    try:
        run_dir.create()
        if checkpoint is None:
            run_dir.claim(dump_yaml(cfg))   # atomic: two runs racing for one directory cannot both get it
        else:
            run_dir.write_config(dump_yaml(cfg))
        write_partition_csv(run_dir.path / "partition.csv", ds.train_y.numpy(), parts, ds.num_classes)
        if checkpoint is not None:
            engine.load_state_dict(checkpoint["engine"])
    except BaseException:
        engine.close()
        raise
    start, bytes_sent, wall_before, pending = 0, 0, 0.0, []
    cross = 0   # payload bytes that crossed Ray nodes (0 on the local engine)
    if checkpoint is not None:
        start, bytes_sent, wall_before = checkpoint["round"], checkpoint["bytes_sent"], checkpoint["wall_seconds"]
        cross = checkpoint.get("bytes_cross_node", 0)
        pending = list(checkpoint.get("pending_losses", []))
        run_dir.truncate_metrics_after(start)
        log(f"resumed from round {start} of {plan.total_rounds}")

    log(f"run: {cfg.algorithm.name} on {engine.topology.describe()}, {plan.total_rounds} rounds "
        f"({plan.rounds_per_epoch}/epoch), evaluating every {plan.eval_every}; backend={cfg.backend}")
    log(f"run directory: {run_dir.path}")

    t0 = time.time() - wall_before
    status, message = "completed", ""
    payload_bytes = engine.payload_bytes
    last_ckpt = start
    t = start
    restarts = 0
    bar = _progress(plan.total_rounds, start, cfg.progress)
    state = {"loss": float("nan"), "acc": float("nan")}

    def abort(signum: int) -> None:
        # Second signal: no checkpoint, no engine shutdown (that is what takes seconds and, cut
        # short, printed pages of Ray internals). The summary says how to go on; os._exit ends
        # this process, and a Ray it started dies with it (Ray's fate-sharing of child processes).
        msg = (f"{signal.Signals(signum).name} again: stopped at once at round {t}; resume from the last "
               f"checkpoint with: {resume_hint(run_dir)}")
        try:
            bar.close()
            _write_summary(run_dir, cfg, engine, "stopped", msg, t, t0)
        finally:
            print(msg, file=sys.stderr, flush=True)
            os._exit(128 + signum)

    stop_flag.on_abort = abort

    def on_round(r: int, loss: float) -> None:
        state["loss"] = loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{state['acc']:.3f}", refresh=False)

    def save(r: int) -> None:
        # `pending_losses`: the rounds since the last evaluation, so a replay's next row is identical.
        run_dir.save_checkpoint(r, {"round": r, "bytes_sent": bytes_sent, "wall_seconds": time.time() - t0,
                                    "bytes_cross_node": cross,
                                    "pending_losses": list(pending), "fingerprint": replay_fingerprint(cfg),
                                    "engine": engine.state_dict()},
                                keep=cfg.fault_tolerance.keep)

    if checkpoint is None:
        save(start)  # the restore point of a failure before the first periodic checkpoint

    try:
        with stop_flag:
            while True:
                try:
                    for stop in plan.stops(t):
                        losses = engine.train(range(t, stop), plan.lr, on_round, should_stop=stop_flag)
                        done = t + len(losses)
                        for r in range(t, done):
                            bytes_sent += round_bytes(engine.topology, engine.centralized, engine.n_clients, r,
                                                      payload_bytes)
                            bytes_sent += outer_step_bytes(cfg.algorithm.slowmo_tau, engine.n_clients, r, payload_bytes)
                            cross += engine.cross_node_bytes(r) if hasattr(engine, "cross_node_bytes") else 0
                        t = done
                        pending.extend(losses)
                        if done < stop:  # a stop signal: the engine stopped cleanly at a round boundary
                            raise _Stopped
                        chunk_loss = sum(losses) / len(losses)
                        if not math.isfinite(chunk_loss) or chunk_loss > DIVERGENCE_LOSS:
                            status = "diverged"
                            message = (f"training diverged at round {t}: train loss {chunk_loss:.4g} "
                                       f"(NaN or > {DIVERGENCE_LOSS:g}); try a smaller algorithm.lr")
                            break
                        if t % plan.eval_every == 0 or t == plan.total_rounds:
                            metrics = engine.evaluate()
                            row = {"round": t, "epoch": t / plan.rounds_per_epoch, "lr": plan.lr(t - 1),
                                   "train_loss": sum(pending) / len(pending), "bytes_sent": bytes_sent,
                                   "bytes_cross_node": cross,
                                   "wall_seconds": time.time() - t0, "n_clients": engine.n_clients, **metrics}
                            pending = []
                            run_dir.append_metrics(row)
                            state["acc"] = row["test_accuracy"]
                            if on_eval is not None:
                                on_eval(row)
                        if t in plan.resize_at and t < plan.total_rounds:
                            log(f"elastic: round {t}: {engine.n_clients} -> {plan.resize_at[t]} clients")
                            engine.resize(plan.resize_at[t], t)
                            payload_bytes = engine.payload_bytes
                        every = cfg.fault_tolerance.checkpoint_every
                        if every and t - last_ckpt >= every and t < plan.total_rounds:
                            save(t)
                            last_ckpt = t
                    break
                except EngineFailure as e:
                    # A restore that fails (a replacement on a node that is dying too) is one
                    # more restart, not a crash.
                    ckpt = None
                    while ckpt is None:
                        restarts += 1
                        if restarts > cfg.fault_tolerance.max_restarts:
                            break
                        ckpt = run_dir.load_latest_checkpoint(log=log)
                        if ckpt is None:
                            raise
                        try:
                            engine.load_state_dict(ckpt["engine"])
                        except EngineFailure as again:
                            log(f"restore failed: {again}")
                            e, ckpt = again, None
                    if ckpt is None:
                        kept = run_dir.list_checkpoints()
                        where = (f"the checkpoint of round {int(kept[-1].stem.split('_')[1])} is kept"
                                 if kept else "no checkpoint was written")
                        status, message = "failed", (
                            f"{e}; gave up after fault_tolerance.max_restarts={cfg.fault_tolerance.max_restarts} "
                            f"restarts at round {t}; {where}: resume with {resume_hint(run_dir)} "
                            f"(or raise fault_tolerance.max_restarts)")
                        break
                    t, bytes_sent = ckpt["round"], ckpt["bytes_sent"]
                    cross = ckpt.get("bytes_cross_node", 0)
                    pending = list(ckpt.get("pending_losses", []))
                    last_ckpt = t
                    payload_bytes = engine.payload_bytes
                    run_dir.truncate_metrics_after(t)
                    bar.n = t
                    bar.refresh()
                    log(f"recovered from: {e}; restored the checkpoint of round {t} "
                        f"({engine.n_clients} clients), replaying "
                        f"(restart {restarts} of {cfg.fault_tolerance.max_restarts})")
    except _Stopped:
        save(t)  # the engine stopped at a round boundary: its state is that of round t
        name = signal.Signals(stop_flag.signum).name if stop_flag.signum else "stop"
        status, message = "stopped", f"{name}: stopped at round {t} (checkpointed); resume with: {resume_hint(run_dir)}"
    except Exception as e:  # the summary must say what happened, then the error propagates
        status, message = "failed", f"{type(e).__name__}: {e}"
        _finish(run_dir, cfg, engine, status, message, t, t0, bar)
        raise
    if status == "completed":
        save(t)
    summary = _finish(run_dir, cfg, engine, status, message, t, t0, bar)
    if status == "stopped":
        summary["signal"] = stop_flag.signum
    return summary


class _Stopped(Exception):
    """The engine stopped at a round boundary because a stop signal came."""


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (what Slurm, Kubernetes and `kill` send) alike. The first
    asks the engine to stop at the next round boundary; the run then checkpoints, writes
    summary.json (status stopped) and says how to resume. A second one calls `on_abort`, which
    exits at once. Only the main thread can own signals: a Tune trial runs in another thread
    and is stopped by Tune. Nested `with` blocks install the handlers once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self.on_abort: Optional[Callable[[int], None]] = None
        self._previous: dict = {}
        self._depth = 0

    def __call__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame):
        if self.signum is not None:
            if self.on_abort is not None:
                self.on_abort(signum)   # does not return
            raise KeyboardInterrupt     # before training started: nothing to save
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping at the next round boundary, then checkpointing ({name} again: stop at once)",
              file=sys.stderr, flush=True)

    def __enter__(self):
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def reinstall(self) -> None:
        """ray.init installs its own SIGTERM handler (a C++ stack dump, then death): take it back."""
        for s in self._previous:
            signal.signal(s, self._handler)

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth:
            return False
        for s, previous in self._previous.items():
            # Once stopping, the outcome is on disk: a late second signal (while the summary is
            # printed, or at interpreter exit) just ends the process, without a traceback.
            signal.signal(s, _exit_now if self.signum is not None else previous)
        self._previous = {}
        return False


def _exit_now(signum, frame):
    sys.stderr.flush()
    os._exit(128 + signum)


def _finish(run_dir, cfg, engine, status, message, t, t0, bar) -> dict:
    bar.close()
    try:
        engine.close()
    except Exception:  # noqa: BLE001 - closing must not hide the real outcome
        pass
    return _write_summary(run_dir, cfg, engine, status, message, t, t0)


def _write_summary(run_dir, cfg, engine, status, message, t, t0) -> dict:
    accs = run_dir.test_accuracies()  # metrics.csv: every evaluation, also those before a resume
    summary = {
        "status": status,
        "final_test_accuracy": accs[-1] if accs else None,
        "best_test_accuracy": max(accs) if accs else None,
        "rounds": t,
        "wall_seconds": time.time() - t0,
        "n_clients": engine.n_clients,
        "algorithm": cfg.algorithm.name,
        "alpha": cfg.data.alpha,
        "topology": cfg.topology.name,
        "dataset": cfg.data.name,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "lr": cfg.algorithm.lr,
        "backend": cfg.backend,
        "time_lost_seconds": getattr(engine, "time_lost_seconds", 0.0),   # to failures (Ray engine)
        "message": message,
        "run_dir": str(run_dir.path),
    }
    run_dir.write_summary(summary)
    return summary
