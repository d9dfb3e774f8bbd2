"""One decentralized training run, whatever the engine: `Run` composes the straight loop
(runner/loop.py) with the run directory (its lock and lifecycle), the metrics file, the checkpoint
store, the recovery policy and the stop signals; `run()` is what main.py, a Tune trial and the
Python API call.

The order matters for the user: every check that can fail (config, data, partition sizes,
topology: `prepare`, runner/prepare.py) happens before the run directory is created or any
actor starts. A restore point goes into the engine through runner/restore.py; what the run's
end says (summary.json, the stop and failure messages) is runner/outcome.py's.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from qgm_ray import build, tracking
from qgm_ray.config import Config, dump_yaml
from qgm_ray.engine.base import Engine, EngineFailure, RoundRecord
from qgm_ray.outputs import OutputError, RunDir, WriteError, check_new_run_dir, default_run_dir
from qgm_ray.partition import write_partition_csv
from qgm_ray.runner import loop, outcome, recovery, restore
from qgm_ray.runner.checkpoints import CheckpointStore, replay_fingerprint
from qgm_ray.runner.metrics_file import METRIC_COLUMNS, MetricsFile
from qgm_ray.runner.outcome import resume_hint
from qgm_ray.runner.plan import RunPlan, RunState
from qgm_ray.runner.prepare import check_device, check_ray_address, prepare
from qgm_ray.runner.recovery import RecoveryPolicy
from qgm_ray.runner.resume import check_resumable, refuse_finished, restore_points
from qgm_ray.runner.startup import Startup
from qgm_ray.signals import StopSignals

__all__ = ["Run", "check_device", "make_engine", "prepare", "resume_hint", "run"]


def make_engine(cfg: Config, ds, parts, log: Callable[[str], None],
                mark: Optional[Callable[[str], None]] = None) -> Engine:
    """`mark(phase)`: told when Ray is up (runner/startup.py), on the Ray engine."""
    if cfg.backend == "ray":
        from qgm_ray.engine.ray_engine import RayEngine  # Ray is imported only when used
        return RayEngine(cfg, ds, parts, log=log, mark=mark)
    from qgm_ray.engine.local import LocalEngine
    return LocalEngine(cfg, ds, parts, device=build.resolve_device(cfg))


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="round", dynamic_ncols=True,
                desc="training", leave=True)


def run(cfg: Config, output_dir: Optional[str | Path] = None, *, resume: bool = False,
        on_eval: Optional[Callable[[dict], None]] = None, log: Callable[[str], None] = print,
        own_files: tuple = ()) -> dict:
    """Train; write outputs; return the summary. `on_eval(row)` sees every metrics row (Tune).
    `own_files`: names the caller has already put into output_dir (a Tune trial's log.txt)."""
    return Run.open(cfg, output_dir, resume=resume, on_eval=on_eval, log=log, own_files=own_files).execute()


class Run:
    """One training run as an object: config, plan, run directory, engine, and its state record
    (`RunState`). `execute()` drives the loop (`loop.train_to_end`) to an end; this object is
    the loop's parts (`record`, `checkpoint`, `clock`, `should_stop`, `on_round`, `log`) and
    handles what ends a chunk early (`recover`, `stopped`, `fail_to_write`), then `finish`es.
    Whatever drives a run (main.py, a Tune trial, the Python API) drives this one object:
    `run()` is `Run.open(...).execute()`; between the two, `state`, `plan` and `on_eval` may be
    read or set."""

    def __init__(self, cfg: Config, ds, parts, plan: RunPlan, run_dir: RunDir, *, resume: bool,
                 checkpoint: Optional[dict] = None, older: Optional[Iterator[tuple[Path, dict]]] = None,
                 on_eval: Optional[Callable[[dict], None]] = None, log: Callable[[str], None] = print,
                 own_files: tuple = (), startup: Optional[Startup] = None):
        self.cfg, self.ds, self.parts, self.plan, self.run_dir = cfg, ds, parts, plan, run_dir
        self.startup = startup or Startup()   # the phase times of the run's start (summary.json)
        self.resume, self.on_eval, self.log, self.own_files = resume, on_eval, log, own_files
        self.metrics = MetricsFile.of(run_dir.path)
        self.store = CheckpointStore.of(run_dir.path)
        self._checkpoint, self._older = checkpoint, older or iter(())   # the restore point; older candidates
        self.state = RunState() if checkpoint is None else RunState.from_checkpoint(checkpoint).restored()
        self.stop = StopSignals()
        self.engine: Optional[Engine] = None
        self.bar = None
        self.trackers = tracking.Trackers([], log)   # started with the run (start), fed by record
        self._t0 = time.time() - self.state.wall_seconds
        self._acc = float("nan")
        self.fingerprint = replay_fingerprint(cfg)
        # max_restarts is a budget per process: counted from the record this process opened
        self.policy = RecoveryPolicy(cfg.fault_tolerance.max_restarts, resume_hint(run_dir), self.state.restarts)

    @classmethod
    def open(cls, cfg: Config, output_dir: Optional[str | Path] = None, *, resume: bool = False,
             on_eval=None, log: Callable[[str], None] = print, own_files: tuple = ()) -> "Run":
        """Every check that can fail, before Ray or any actor starts and before anything is
        written: the directory (a resume locks it now), the data, the restore point."""
        startup = Startup()
        startup.mark("run")
        run_dir = RunDir(output_dir or cfg.output_dir or default_run_dir(cfg.name))
        if not resume:
            check_new_run_dir(run_dir.path, ignore=own_files)  # never write into another run's directory
        elif run_dir.path.is_dir():
            run_dir.lock()   # first: a live run is refused as such, whatever it has written yet
        try:
            if resume:
                check_resumable(cfg, run_dir, log)
            check_ray_address(cfg)   # a wrong ray.address fails in seconds, before the data is made
            ds, parts = prepare(cfg, log)
            startup.mark("data")
            plan = RunPlan.make(cfg, len(ds.train_x))
            checkpoint, older = None, iter(())
            if resume:
                checkpoint, older = restore_points(run_dir, cfg, plan, log)
                refuse_finished(run_dir, checkpoint, plan)
            return cls(cfg, ds, parts, plan, run_dir, resume=resume, checkpoint=checkpoint, older=older,
                       on_eval=on_eval, log=log, own_files=own_files, startup=startup)
        except BaseException:
            run_dir.unlock()
            raise

    def start(self) -> None:
        """Start the engine, then write the run's files and its restore point. The engine
        starts (and, on Ray, checks the cluster) before anything is written: a cluster that
        cannot run this config fails with a ConfigError and no half-made run dir. A new run
        that fails before its first checkpoint is on disk leaves nothing behind."""
        cfg, run_dir = self.cfg, self.run_dir
        self.engine = make_engine(cfg, self.ds, self.parts, self.log, mark=self.startup.mark)
        self.startup.mark("engine")
        self._t0 = time.time()   # the training clock starts now: Ray's start is not training time
        self.stop.reinstall()
        if self.stop():  # a signal while Ray or the actors started: nothing to save yet
            self.engine.close()
            raise KeyboardInterrupt
        made = claimed = False
        try:
            if not self.resume:
                made = run_dir.create()
                run_dir.lock()
                run_dir.claim(dump_yaml(cfg))   # atomic: two runs racing for one directory cannot both get it
                claimed = True
            else:
                run_dir.write_config(dump_yaml(cfg))
            run_dir.write_file("partition.csv", lambda tmp: write_partition_csv(
                tmp, self.ds.train_y.numpy(), self.parts, self.ds.num_classes))
            if self.resume:
                self._load_restore_point()
                self._t0 = time.time() - self.state.wall_seconds   # the clock goes on from the checkpoint's
                restore.take_restored(self.metrics, self.state)
                self.log(f"resumed from round {self.state.round} of {self.plan.total_rounds}")
            else:
                self._first_checkpoint()  # the restore point of a failure before the first periodic checkpoint
        except BaseException as e:
            self.engine.close()
            if claimed:  # the directory is this run's: take back what it wrote
                run_dir.discard(made)
            if isinstance(e, WriteError):
                raise OutputError(f"{e}; {'nothing was kept' if not self.resume else 'the run is unchanged'}") from None
            raise
        self.log(f"run: {cfg.algorithm.name} on {self.engine.topology.describe()}, {self.plan.total_rounds} rounds "
                 f"({self.plan.rounds_per_epoch}/epoch), evaluating every {self.plan.eval_every}; backend={cfg.backend}")
        self.log(f"run directory: {run_dir.path}")
        started = time.time()
        self.trackers = tracking.Trackers.open(cfg, run_dir.path, METRIC_COLUMNS, log=self.log,
                                               resume_round=self.state.round if self.resume else None)
        self._t0 += time.time() - started   # a tracker's start (a server's answer) is not training time
        self.bar = _progress(self.plan.total_rounds, self.state.round, cfg.progress)
        self.stop.on_abort = self.abort

    def _first_checkpoint(self) -> None:
        """A new run's restore point, at round 0. An actor lost while it is taken has been
        replaced by the engine with a fresh one, and at round 0 fresh is what was lost: take it
        again (one restart each), rather than fail a run that has not trained yet."""
        while True:
            try:
                self.checkpoint()
                return
            except EngineFailure as e:
                d = self.policy.decide(e, self.state.restarts, 0, restore_round=0)
                self.state.restarts = d.restarts
                if d.action != recovery.RETRY:
                    raise
                self.log(f"recovered from: {e}; before round 0, so the first checkpoint is taken again ({d.message})")

    def _load_restore_point(self) -> None:
        """The newest valid checkpoint the engine takes (runner/restore.py); a fallback to an
        older one goes on from that one's record."""
        taken = restore.load_fitting(self.engine, self._checkpoint, self._older, self.run_dir, self.log)
        if taken is not self._checkpoint:
            self._checkpoint, self.state = taken, RunState.from_checkpoint(taken).restored()
            self.policy = dataclasses.replace(self.policy, restarts_at_open=self.state.restarts)

    def execute(self) -> dict:
        """Train to the end (or a stop, a divergence, a failure), write the summary, return it.
        SIGINT / SIGTERM stop the run gracefully meanwhile; the directory's lock is released at
        the end, whatever the end."""
        try:
            with self.stop:
                return self._execute()
        finally:
            self.run_dir.unlock()

    def _execute(self) -> dict:
        self.start()
        try:
            while self.state.status == "running":
                try:
                    loop.train_to_end(self.state, self.plan, self.engine, self)
                except EngineFailure as e:
                    self.recover(e)
        except loop.Stopped:
            self.stopped()
        except WriteError as e:  # a full disk: a `failed` summary with the reason, no traceback
            self.fail_to_write(e)
        except Exception as e:  # the summary must say what happened, then the error propagates
            self.state.status, self.state.message = "failed", f"{type(e).__name__}: {e}"
            self.finish()
            raise
        summary = self.finish()
        if self.state.status == "stopped":
            summary["signal"] = self.stop.signum
        return summary

    def recover(self, e: EngineFailure) -> None:
        """Restore the newest checkpoint into the engine and go on from its round (a replay), as
        long as the recovery policy says retry; else fail resumably. A restore that fails (a
        replacement on a node that is dying too) is one more failure for the policy to weigh."""
        s = self.state
        while True:
            _, ckpt = next(self.store.valid(self.fingerprint, self.plan.total_rounds, self.log), (None, None))
            restore_round = None if ckpt is None else RunState.from_checkpoint(ckpt).round
            d = self.policy.decide(e, s.restarts, s.round, restore_round)
            s.restarts = d.restarts
            if d.action == recovery.GIVE_UP:
                s.status, s.message = "failed", d.message
                return
            if d.action == recovery.RAISE:
                raise e  # nothing to restore: the failure is the outcome
            try:
                self.engine.load_state_dict(ckpt["engine"])
                break
            except EngineFailure as again:
                self.log(f"restore failed: {again}")
                e = again
        self.state = restored = RunState.from_checkpoint(ckpt).restored()
        restored.restarts = s.restarts   # the wall clock goes on too: time lost to the failure is time spent
        restore.take_restored(self.metrics, restored)
        self.trackers.rewind(restored.round)
        self.bar.n = restored.round
        self.bar.refresh()
        self.log(f"recovered from: {e}; restored the checkpoint of round {restored.round} "
                 f"({self.engine.n_clients} clients), replaying ({d.message})")

    def stopped(self) -> None:
        """A stop signal: the engine stopped at a round boundary, its state is that of the round."""
        s = self.state
        s.status, s.message = "stopped", outcome.stopped_message(self.stop.signum, s.round, self.run_dir)
        try:
            self.checkpoint()
        except WriteError as e:
            self.fail_to_write(e)

    def fail_to_write(self, e: WriteError) -> None:
        message = outcome.write_failed_message(e, self.state.round, self.store.newest_round(), self.run_dir)
        self.state.status, self.state.message = "failed", message

    def abort(self, signum: int) -> None:
        """Second signal: no checkpoint, no engine shutdown (that is what takes seconds and, cut
        short, printed pages of Ray internals). The summary says how to go on; os._exit ends
        this process, and a Ray it started dies with it (Ray's fate-sharing of child processes)."""
        msg = outcome.aborted_message(signum, self.state.round, self.run_dir)
        try:
            self.bar.close()
            self.state.status, self.state.message = "stopped", msg
            self.write_summary()
        finally:
            print(msg, file=sys.stderr, flush=True)
            os._exit(128 + signum)

    def finish(self) -> dict:
        """Close the engine (Ray's shutdown) and write the summary. From here a signal ends the
        process once the summary is written (qgm_ray/signals.py: the finishing phase)."""
        self.stop.finishing()
        if self.state.status != "stopped" and self.stop():
            # The signal came after the last round trained (during the final evaluation or
            # checkpoint): the run is whole; report it as it is, then exit 128 + n.
            self.stop.late_signum, self.stop.signum = self.stop.signum, None
        self.bar.close()
        self.trackers.close(self.state.status)
        try:
            self.engine.close()
        except Exception:  # noqa: BLE001 - closing must not hide the real outcome
            pass
        self.startup.mark("end")
        return self.write_summary()

    def record(self, row: dict) -> None:
        """One metrics row: appended to metrics.csv, then to the experiment trackers, handed to on_eval."""
        self.metrics.append(row)
        self.trackers.log(row)
        self._acc = row["test_accuracy"]
        if self.on_eval is not None:
            self.on_eval(row)

    def checkpoint(self) -> None:
        """The state record and the engine's state, as one file (the restore point)."""
        s = self.state
        s.last_checkpoint = s.round
        s.wall_seconds = self.clock()
        self.store.save(s.round, {"state": s.to_checkpoint(), "fingerprint": self.fingerprint,
                                  "engine": self.engine.state_dict()}, keep=self.cfg.fault_tolerance.keep)

    def clock(self) -> float:
        """Training seconds so far, across resumes."""
        return time.time() - self._t0

    def should_stop(self) -> bool:
        return self.stop()

    def on_round(self, record: RoundRecord) -> None:
        self.startup.mark("first_round")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record.loss:.3f}", acc=f"{self._acc:.3f}", refresh=False)

    def summary(self) -> dict:
        """summary.json's record of the run as it is now (runner/outcome.py)."""
        return outcome.summary(self.cfg, self.state, self.engine, self.run_dir, self.startup, self.clock())

    def write_summary(self) -> dict:
        return outcome.write_summary(self.run_dir, self.summary())
