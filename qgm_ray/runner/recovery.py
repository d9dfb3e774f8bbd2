"""The one place that decides what a failure of the engine means for the run: retry from a
checkpoint, or end the run. Pure (no Ray, no files): the runner asks, the engine only reports
failures (EngineFailure) and never counts restarts itself.

`fault_tolerance.max_restarts` is a budget per process: a resumed run gets the whole budget
again, while the record's `restarts` keeps counting over the run's life.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from qgm_ray.engine.base import EngineFailure

RETRY = "retry"        # restore the restore point into the engine and replay from its round
GIVE_UP = "give_up"    # the budget is spent: the run fails resumably with `message`
RAISE = "raise"        # not a recoverable failure (or nothing to restore): the failure is the outcome


@dataclass(frozen=True)
class Decision:
    action: str        # RETRY | GIVE_UP | RAISE
    restarts: int      # the record's restart count, this restart included
    message: str       # RETRY: "restart k of m"; GIVE_UP: the run's one-line message with the resume hint


@dataclass(frozen=True)
class RecoveryPolicy:
    max_restarts: int
    resume_hint: str              # the command that continues the run (in the failure message)
    restarts_at_open: int = 0     # the record's count when this process took the run over

    def used(self, restarts: int) -> int:
        """Restarts spent from this process's budget."""
        return restarts - self.restarts_at_open

    def decide(self, failure: BaseException, restarts: int, at_round: int,
               restore_round: Optional[int]) -> Decision:
        """After `failure` at `at_round`, with `restarts` counted so far: one more restart, or
        the end of the run. Only a failure of part of the engine (EngineFailure) is retried, and
        only from a restore point (`restore_round`: its round, None when there is none)."""
        if not isinstance(failure, EngineFailure):
            return Decision(RAISE, restarts, f"{type(failure).__name__}: {failure}")
        restarts += 1
        if self.used(restarts) > self.max_restarts:
            return Decision(GIVE_UP, restarts, self.give_up(failure, at_round, restore_round))
        if restore_round is None:
            return Decision(RAISE, restarts, f"{type(failure).__name__}: {failure}")
        return Decision(RETRY, restarts, f"restart {self.used(restarts)} of {self.max_restarts}")

    def give_up(self, failure: BaseException, at_round: int, kept_round: Optional[int]) -> str:
        where = (f"the checkpoint of round {kept_round} is kept" if kept_round is not None
                 else "no checkpoint was written")
        return (f"{failure}; gave up after fault_tolerance.max_restarts={self.max_restarts} restarts at round "
                f"{at_round}; {where}: resume with {self.resume_hint} (or raise fault_tolerance.max_restarts)")
