"""The names a sweep gives things in its directory, and a run's outcomes that finish a trial."""
from __future__ import annotations


EXPERIMENT = "tune"   # Tune's experiment directory inside the sweep directory
TRIALS = "trials"     # our run directories inside the sweep directory
SCHEDULER_STOP = "scheduler_stopped"   # marker file in a trial directory (see _mark_scheduler_stop)
FINISHED = ("completed", "diverged")   # a run's outcomes: a trial with either is done
