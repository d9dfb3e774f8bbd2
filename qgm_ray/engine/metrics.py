"""Prometheus metrics of a run, exported through Ray (`ray.util.metrics`).

Ray's metrics agent on each node serves them at its metrics export port with a `ray_` prefix
(`ray_qgm_round`, `ray_qgm_train_loss`, ...); the dashboard's Metrics view and any Prometheus
scraping the cluster (`ray metrics launch-prometheus`) pick them up. Every series carries the
run name in the `run` tag; per-client series also carry `client` (the shard id), and
`client="mean"` is the federation's mean.
"""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge

NAMES = ("qgm_round", "qgm_train_loss", "qgm_test_accuracy", "qgm_consensus_distance",
         "qgm_round_seconds", "qgm_bytes_sent_total", "qgm_bytes_cross_node_total")


class RunMetrics:
    def __init__(self, run: str):
        self.tags = {"run": run}
        self.round = Gauge("qgm_round", "rounds completed", tag_keys=("run",))
        self.train_loss = Gauge("qgm_train_loss", "mini-batch training loss of the last round",
                                tag_keys=("run", "client"))
        self.test_accuracy = Gauge("qgm_test_accuracy", "test accuracy of the averaged model (fraction)",
                                   tag_keys=("run",))
        self.consensus = Gauge("qgm_consensus_distance", "mean_i ||x_i - xbar||^2", tag_keys=("run",))
        self.round_seconds = Gauge("qgm_round_seconds", "wall seconds of the last round", tag_keys=("run",))
        self.bytes_sent = Counter("qgm_bytes_sent_total", "payload bytes sent to neighbours", tag_keys=("run",))
        # A gauge holding the running total: a Counter cannot export its 0 (single-node runs).
        self.bytes_cross_node = Gauge("qgm_bytes_cross_node_total",
                                      "payload bytes moved from one Ray node to another, in all", tag_keys=("run",))
        self.cross_total = 0

    def on_round(self, t: int, losses: list, slots: list, seconds: float, nbytes: int) -> None:
        self.round.set(t + 1, tags=self.tags)
        self.round_seconds.set(seconds, tags=self.tags)
        if nbytes > 0:
            self.bytes_sent.inc(nbytes, tags=self.tags)
        if losses:
            self.train_loss.set(sum(losses) / len(losses), tags={**self.tags, "client": "mean"})
            for s, loss in zip(slots, losses):
                self.train_loss.set(loss, tags={**self.tags, "client": str(s)})

    def on_cross_node(self, nbytes: int) -> None:
        self.cross_total += nbytes
        self.bytes_cross_node.set(self.cross_total, tags=self.tags)

    def on_eval(self, metrics: dict) -> None:
        self.test_accuracy.set(metrics["test_accuracy"], tags=self.tags)
        self.consensus.set(metrics["consensus_distance"], tags=self.tags)
