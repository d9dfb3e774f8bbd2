"""What a run will do (RunPlan: the round arithmetic) and what it has done (RunState: the record
that is checkpointed and restored as a unit). Pure data and arithmetic: no I/O."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from qgm_ray.clock import ClockModel
from qgm_ray.config import Config
from qgm_ray.schedule import LRSchedule, rounds_per_epoch


@dataclass
class RunPlan:
    """Round arithmetic of a run, derived once from config and data."""
    rounds_per_epoch: int
    total_rounds: int
    eval_every: int
    lr: LRSchedule
    resize_at: dict = field(default_factory=dict)  # round -> n_clients
    checkpoint_every: int = 0
    clock: Optional[ClockModel] = None   # the simulated time (qgm_ray/clock/); None: not kept

    @classmethod
    def make(cls, cfg: Config, n_train: int) -> "RunPlan":
        rpe = rounds_per_epoch(n_train, cfg.topology.n_clients, cfg.data.batch_size)
        lr = LRSchedule.from_config(cfg, rpe)
        resize = {max(1, round(e * rpe)): n for e, n in cfg.elastic.schedule}
        from qgm_ray.build import max_clients
        return cls(rpe, lr.total_rounds, max(1, round(cfg.eval.every_epochs * rpe)), lr, resize,
                   cfg.fault_tolerance.checkpoint_every, ClockModel.from_config(cfg, max_clients(cfg)))

    def stops(self, start: int) -> list[int]:
        """Round boundaries after `start` where the runner must regain control."""
        points = set(range(self.eval_every, self.total_rounds, self.eval_every)) | {self.total_rounds}
        points |= {r for r in self.resize_at if r < self.total_rounds}
        if self.checkpoint_every:
            points |= set(range(self.checkpoint_every, self.total_rounds, self.checkpoint_every))
        return sorted(p for p in points if p > start)

    def evaluates_at(self, done: int) -> bool:
        return done % self.eval_every == 0 or done == self.total_rounds

    def resize_to(self, done: int) -> Optional[int]:
        """The client count the run changes to after `done` rounds (None: no change)."""
        return self.resize_at.get(done) if done < self.total_rounds else None

    def checkpoints_at(self, done: int, last_checkpoint: int) -> bool:
        """A periodic checkpoint (the final one is the loop's last step, whatever the period)."""
        return bool(self.checkpoint_every) and done - last_checkpoint >= self.checkpoint_every \
            and done < self.total_rounds


@dataclass
class RunState:
    """Everything a run has done so far, as one record: checkpointed and restored as a unit.
    A recovery or a resume restores it whole from the checkpoint; only `restarts` carries over
    a recovery (the restarts happened after the checkpoint). The accuracies evaluated so far are
    in it, so the summary never reads them back from metrics.csv and a resume still knows those
    evaluated before it."""
    round: int = 0                  # rounds done
    bytes_sent: int = 0             # payload bytes put on the wire so far
    bytes_cross_node: int = 0       # of which crossed Ray nodes (0 on the local engine)
    wall_seconds: float = 0.0       # training time so far, at the checkpoint
    pending_losses: list = field(default_factory=list)   # losses of the rounds since the last evaluation
    restarts: int = 0               # recoveries from EngineFailure over the run's life
    last_checkpoint: int = 0        # round of the newest checkpoint
    status: str = "running"         # running | completed | diverged | stopped | failed
    message: str = ""
    final_test_accuracy: Optional[float] = None   # of the newest evaluation
    best_test_accuracy: Optional[float] = None    # the highest of every evaluation so far
    sim_seconds: float = 0.0        # simulated time when the last client finished the last round
    sim_start: list = field(default_factory=list)   # simulated start time of each position's next round

    def record_accuracy(self, acc: float) -> None:
        """One more evaluation. `max(best, acc)` keeps the first of equals, as max() over the
        list of every accuracy does."""
        self.final_test_accuracy = acc
        self.best_test_accuracy = acc if self.best_test_accuracy is None else max(self.best_test_accuracy, acc)

    def to_checkpoint(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "RunState":
        """The record of a checkpoint; also one written before the record existed (flat keys
        round, bytes_sent, wall_seconds, bytes_cross_node, pending_losses)."""
        rec = ckpt.get("state")
        if not isinstance(rec, dict):
            rec = {k: ckpt[k] for k in ("round", "bytes_sent", "wall_seconds", "bytes_cross_node", "pending_losses")
                   if k in ckpt}
            rec.setdefault("last_checkpoint", rec.get("round", 0))
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in rec.items() if k in names})
        state.pending_losses = list(state.pending_losses)
        state.sim_start = list(state.sim_start)
        return state

    def restored(self) -> "RunState":
        """The record to go on from: a checkpoint written when a run stopped says `stopped`."""
        return dataclasses.replace(self, status="running", message="")
