"""Prometheus metrics of a run, exported through Ray (`ray.util.metrics`).

Ray's metrics agent on each node serves them at its metrics export port with a `ray_` prefix
(`ray_qgm_round`, `ray_qgm_train_loss`, ...); the dashboard's Metrics view and any Prometheus
scraping the cluster (`ray metrics launch-prometheus`) pick them up. Every series carries the
run's tag in `run` (fixed for the whole run: a restarted Coordinator keeps it, so a dashboard
series never breaks); per-client series (up to PER_CLIENT_SERIES_MAX clients) also carry
`client` (the shard id), and `client="mean"` is the federation's mean.

Replays. After a failure the engine restores a checkpoint and runs some rounds again; those
rounds' bytes were sent already. `qgm_bytes_sent_total` counts a round only the first time
(`counted_rounds`: rounds counted so far, handed to a restarted Coordinator), so it stays the
bytes of the run's rounds, as metrics.csv's `bytes_sent` does; `qgm_bytes_cross_node_total`
likewise (a restarted Coordinator starts that gauge's total from 0 again).
"""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge

NAMES = ("qgm_round", "qgm_train_loss", "qgm_test_accuracy", "qgm_consensus_distance",
         "qgm_round_seconds", "qgm_bytes_sent_total", "qgm_clients", "qgm_bytes_cross_node_total")


# Per-client loss series only up to this many clients: each is a time series the metrics agent
# keeps and one set() per round in the coordinator (16,384 clients: 16,384 calls a round); above
# it, the mean only.
PER_CLIENT_SERIES_MAX = 256


class RunMetrics:
    def __init__(self, run: str, counted_rounds: int = 0):
        self.tags = {"run": run}
        self.counted_rounds = counted_rounds   # rounds 0 .. counted_rounds-1 are in bytes_sent
        self.bytes_counted = 0                 # what this process added to bytes_sent (for tests)
        self.round = Gauge("qgm_round", "rounds completed", tag_keys=("run",))
        self.train_loss = Gauge("qgm_train_loss", "mini-batch training loss of the last round",
                                tag_keys=("run", "client"))
        self.test_accuracy = Gauge("qgm_test_accuracy", "test accuracy of the averaged model (fraction)",
                                   tag_keys=("run",))
        self.consensus = Gauge("qgm_consensus_distance", "mean_i ||x_i - xbar||^2", tag_keys=("run",))
        self.round_seconds = Gauge("qgm_round_seconds", "wall seconds of the last round", tag_keys=("run",))
        self.bytes_sent = Counter("qgm_bytes_sent_total", "payload bytes sent to neighbours (each round once)",
                                  tag_keys=("run",))
        self.clients = Gauge("qgm_clients", "clients in the run now (elastic resizes, dropped clients)",
                             tag_keys=("run",))
        # A gauge holding the running total: a Counter cannot export its 0 (single-node runs).
        self.bytes_cross_node = Gauge("qgm_bytes_cross_node_total",
                                      "payload bytes moved from one Ray node to another, in all", tag_keys=("run",))
        self.cross_total = 0

    def on_round(self, t: int, losses: list, slots: list, seconds: float, nbytes: int, cross_nbytes: int = 0) -> None:
        self.round.set(t + 1, tags=self.tags)
        self.round_seconds.set(seconds, tags=self.tags)
        self.clients.set(len(slots), tags=self.tags)
        if t >= self.counted_rounds:   # a replayed round was counted the first time
            self.counted_rounds = t + 1
            if nbytes > 0:
                self.bytes_sent.inc(nbytes, tags=self.tags)
                self.bytes_counted += nbytes
            self.cross_total += cross_nbytes
            self.bytes_cross_node.set(self.cross_total, tags=self.tags)
        if losses:
            self.train_loss.set(sum(losses) / len(losses), tags={**self.tags, "client": "mean"})
            if len(losses) > PER_CLIENT_SERIES_MAX:
                return
            for s, loss in zip(slots, losses):
                self.train_loss.set(loss, tags={**self.tags, "client": str(s)})

    def on_eval(self, metrics: dict) -> None:
        self.test_accuracy.set(metrics["test_accuracy"], tags=self.tags)
        self.consensus.set(metrics["consensus_distance"], tags=self.tags)
