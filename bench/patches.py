"""Levers the Ray engine does not expose as config keys, applied for measurement only.

Each function here is a Ray `worker_process_setup_hook`: `bench.levers` starts one private Ray
cluster per variant with `runtime_env={"worker_process_setup_hook": "bench.patches.<name>"}`,
so the patch is in every actor process (the Coordinator creates the ClientActors, so a patch
in the driver alone would not reach them). They change how the engine runs, never what it
computes (tests/test_bench.py checks the packed path against separate clients).

The same changes as plain code, for `qgm_ray/engine/actors.py` / `coordinator.py`, are in
docs/results/bench/README.md ("Proposed hooks").
"""
from __future__ import annotations


def lean_coordinator() -> None:
    """Coordinator without per-round O(n) metrics: the per-client loss gauges refreshed every
    50 rounds instead of every round (the mean is still exported every round). W(t)'s wiring
    is memoised by the engine itself (engine/base.py `wiring`)."""
    from qgm_ray.engine import coordinator, metrics

    if getattr(coordinator.Coordinator, "_bench_lean", False):
        return
    orig_on_round = metrics.RunMetrics.on_round

    def on_round(self, t, losses, slots, seconds, nbytes, cross_nbytes=0):
        if t % 50 == 0 or not losses:
            return orig_on_round(self, t, losses, slots, seconds, nbytes, cross_nbytes)
        # Everything but the per-client gauges, then the mean that `losses=[]` skipped.
        orig_on_round(self, t, [], slots, seconds, nbytes, cross_nbytes)
        self.train_loss.set(sum(losses) / len(losses), tags={**self.tags, "client": "mean"})

    metrics.RunMetrics.on_round = on_round
    coordinator.Coordinator._bench_lean = True


def timed_actors() -> None:
    """Diagnostics: ClientActor accumulates the thread CPU time spent inside `step`
    (`bench_step_cpu()`), to split an actor's CPU into the round's work and Ray's overhead."""
    import time

    from qgm_ray.engine import actors

    cls = actors.ClientActor
    if getattr(cls, "_bench_timed", False):
        return
    orig_step = cls.step

    def step(self, *args, **kwargs):
        t = time.thread_time()
        try:
            return orig_step(self, *args, **kwargs)
        finally:
            self._bench_cpu = getattr(self, "_bench_cpu", 0.0) + time.thread_time() - t
            self._bench_calls = getattr(self, "_bench_calls", 0) + 1

    def bench_step_cpu(self):
        return getattr(self, "_bench_cpu", 0.0), getattr(self, "_bench_calls", 0), time.process_time()

    cls.step, cls.bench_step_cpu, cls._bench_timed = step, bench_step_cpu, True
