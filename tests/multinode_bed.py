"""A multi-node Ray test bed on one machine, and the scenarios tests/test_multinode.py runs.

`ray.cluster_utils.Cluster` starts a head (0 CPUs: only the driver and the coordinator live
there) and worker nodes with 1 CPU each, every node with its own raylet and a small object
store, so payloads really move between object stores. One driver joins one cluster per
process, and the rest of the test session shares a single-node Ray: every scenario therefore
runs in its own process,

    python tests/multinode_bed.py SCENARIO OUT_DIR      # last stdout line: a JSON result

and the pytest side only asserts on that result. Node failure detection is sped up
(1 s health checks instead of Ray's 3 s x 5); everything else is Ray's defaults.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from helpers import small_run

SMALL = small_run("eval.every_epochs=0.5", "backend=ray")
OBJECT_STORE = 80 * 2**20
METRIC_KEYS = ("train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance", "bytes_sent",
               "n_clients", "round")


def start_cluster(workers: int, cpus_per_worker: int = 1):
    import ray
    from ray.cluster_utils import Cluster
    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": OBJECT_STORE, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                           "health_check_failure_threshold": 3}})
    for _ in range(workers):
        add_worker(cluster, cpus_per_worker)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    return cluster


def stop(cluster) -> None:
    import ray
    ray.shutdown()
    cluster.shutdown()


def add_worker(cluster, cpus: int = 1):
    return cluster.add_node(num_cpus=cpus, object_store_memory=OBJECT_STORE)


def config(*extra):
    from qgm_ray.config import load_config
    return load_config(None, SMALL + list(extra))


def rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: r[k] for k in METRIC_KEYS} | {"bytes_cross_node": r["bytes_cross_node"]}
                for r in csv.DictReader(f)]


class Recorder:
    """Captures the engine the runner makes and its log lines."""

    def __init__(self, on_log=None):
        from qgm_ray.runner import run as runner
        self.engines, self.logs, self.on_log = [], [], on_log
        make = runner.make_engine

        def wrapped(*a, **k):
            self.engines.append(make(*a, **k))
            return self.engines[-1]
        runner.make_engine = wrapped

    def log(self, msg):
        self.logs.append(msg)
        print(msg, flush=True)
        if self.on_log is not None:
            self.on_log(msg)


def kill_node_of_actor(cluster, engine, actor: int) -> str:
    """Kill (no graceful shutdown) the worker node that holds ClientActor `actor`: what a lost
    spot instance looks like to Ray."""
    import ray
    node_id = engine._info["actor_nodes"][actor]
    node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
    pid = engine.actor_pids()[actor]
    cluster.remove_node(node, allow_graceful=False)
    # A lost machine loses its processes too; Cluster.remove_node kills the raylet and the
    # object store but leaves the worker processes to notice that on their own.
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.time() + 60
    while any(x["NodeID"] == node_id and x["Alive"] for x in ray.nodes()) and time.time() < deadline:
        time.sleep(0.5)
    return node_id


def run_killing(cluster, out: Path, name: str, cfg, actor: int = 1, on_log=None) -> dict:
    """A run whose node holding `actor` is killed while the rounds after the first evaluation run."""
    from qgm_ray.runner import run as runner
    rec = Recorder(on_log)
    killed, placed = [], []

    threads = []

    def kill():
        placed.extend(rec.engines[-1]._info["actor_nodes"])
        killed[0] = kill_node_of_actor(cluster, rec.engines[-1], actor)

    def on_eval(row):
        if not killed:   # first evaluation: kill while the next rounds run
            killed.append(None)
            threads.append(threading.Thread(target=kill))
            threads[0].start()
        elif threads:    # second one: the node is gone by now, whatever the timing of the first
            threads.pop().join()
    s = runner.run(cfg, out / name, on_eval=on_eval, log=rec.log)
    eng = rec.engines[-1]
    return {"summary": s, "rows": rows(out / name) if (out / name / "metrics.csv").exists() else [],
            "logs": rec.logs, "killed": killed, "placed_before_kill": placed,
            "coordinator_node": eng._info["coordinator_node"],
            "actor_nodes": eng._info["actor_nodes"], "recoveries": eng.recoveries, "last_recovery": eng.last_recovery}


# ------------------------------------------------------------------ scenarios


def node_loss(out: Path, cluster=None) -> dict:
    """Node loss with the default resources, on a 0-CPU head and one-CPU workers; 6 clients in
    3 actors of 2. One uninterrupted reference on the local engine, which every replay must
    equal (the numbers depend on the blocks, not on where they run: Ray == local), then the
    node holding ClientActor 1 is killed mid-run in four runs, each leaving the cluster the
    next one needs:
      drop    3 workers, one actor each; on_failure=drop: the run goes on with 4 clients;
      replan  2 workers (the issue's cluster: half a core each), no room left and no node
              joins: after resource_wait_s the actors share the core left;
      wait    1 worker holding every actor, resource_wait_s null: waits and logs until a node
              joins.
    (A node lost with room left on the others: the `plugins` scenario.) `cluster`: one of 3
    workers to use, else a new one."""
    from qgm_ray.runner import run as runner
    from qgm_ray.engine import resource_wait
    own = cluster is None
    cluster = start_cluster(3) if own else cluster
    assert len(cluster.worker_nodes) == 3, cluster.worker_nodes
    try:
        base = ["topology.n_clients=6", "ray.clients_per_actor=2", "schedule.epochs=2",
                "fault_tolerance.checkpoint_every=7", "fault_tolerance.keep=3"]
        ref = runner.run(config(*base, "backend=local"), out / "reference", log=lambda m: None)
        drop = run_killing(cluster, out, "drop", config(*base, "fault_tolerance.on_failure=drop"))

        replan = run_killing(cluster, out, "replan", config(*base, "fault_tolerance.resource_wait_s=1"))
        replan["workers_left"] = len(cluster.worker_nodes)


        resource_wait.WAIT_LOG_EVERY_S = 2.0   # 30 s in real runs
        joiner = []

        def on_log(msg):   # called on the main thread, where Cluster.add_node must run
            if "to replace lost actors" in msg and not joiner:
                joiner.append(add_worker(cluster).node_id)
        wait = run_killing(cluster, out, "wait", config(*base, "fault_tolerance.resource_wait_s=null"),
                           on_log=on_log)
        wait["joined"] = joiner
        return {"head": cluster.head_node.node_id, "reference": {"summary": ref, "rows": rows(out / "reference")},
                "drop": drop, "replan": replan, "wait": wait}
    finally:
        if own:
            stop(cluster)


def placement(out: Path, cluster=None) -> dict:
    """Ring of 16 in 8 actors of 2 over 4 one-CPU nodes: graph placement vs Ray's default
    (`cluster`: one of 4 workers to use, else a new one)."""
    from qgm_ray.engine.coordinator import cross_node_bytes
    from qgm_ray.runner import run as runner
    own = cluster is None
    cluster = start_cluster(4) if own else cluster
    assert len(cluster.worker_nodes) == 4, cluster.worker_nodes
    result = {}
    try:
        for how in ("graph", "default"):
            rec = Recorder()
            cfg = config("topology.n_clients=16", "ray.clients_per_actor=2", "ray.cpus_per_client=0.25",
                         "schedule.epochs=1", f"ray.placement={how}", "name=placement")
            s = runner.run(cfg, out / how, log=rec.log)
            eng = rec.engines[-1]
            r = rows(out / how)
            nodes = eng._info["actor_nodes"]
            # The same actors dealt round-robin over the same nodes (Ray's SPREAD): a fixed baseline.
            spread = [sorted(set(nodes))[a % len(set(nodes))] for a in range(len(nodes))]
            result[how] = {"summary": s, "actor_nodes": nodes,
                           "cross_per_round": eng.cross_node_bytes(0), "payload_bytes": eng.payload_bytes,
                           "spread_cross_per_round": cross_node_bytes(eng.topology, eng.centralized, eng.n_clients,
                                                                      0, 2, spread, eng.payload_bytes),
                           "rounds": s["rounds"], "bytes_cross_node": int(r[-1]["bytes_cross_node"]),
                           "logs": [m for m in rec.logs if "per node" in m]}
        return result
    finally:
        if own:
            stop(cluster)


def joining(out: Path, cluster=None) -> dict:
    """Elastic run 4 -> 6 -> 4 clients on 2 nodes; a third node joins after the first
    evaluation and the grow places the new actor there. Compared with the local engine
    (`cluster`: one of 2 workers to use, else a new one)."""
    from qgm_ray.runner import run as runner
    own = cluster is None
    cluster = start_cluster(2) if own else cluster
    assert len(cluster.worker_nodes) == 2, cluster.worker_nodes
    try:
        extra = ["topology.n_clients=4", "elastic.max_clients=6", "elastic.schedule=[[1.0, 6], [1.5, 4]]",
                 "ray.clients_per_actor=2", "ray.cpus_per_client=0.25", "schedule.epochs=2"]
        rec = Recorder()
        joined = []

        def on_eval(row):
            if not joined:
                joined.append(add_worker(cluster).node_id)
        s = runner.run(config(*extra), out / "ray", on_eval=on_eval, log=rec.log)
        local = runner.run(config(*extra, "backend=local"), out / "local", log=lambda m: None)
        return {"summary": s, "local_summary": local, "rows": rows(out / "ray"), "local_rows": rows(out / "local"),
                "joined": joined, "logs": rec.logs}
    finally:
        if own:
            stop(cluster)


def joining_then_placement(out: Path) -> dict:
    """`joining` and then `placement` on one cluster (a head and a Ray start the fewer): 2
    workers, a third joins during the elastic run, a fourth is added, and the placement runs
    over the 4."""
    cluster = start_cluster(2)
    try:
        joined = joining(out / "joining", cluster)
        add_worker(cluster)
        return {"joining": joined, "placement": placement(out / "placement", cluster)}
    finally:
        stop(cluster)


def plugins(out: Path, cluster=None) -> dict:
    """examples/byo.yaml's rule, model, dataset and graph, copied into a package that only this
    driver has on its sys.path (not the working directory, not PYTHONPATH): the workers of
    every node get it only if the run ships it. A local reference, then a Ray run over three
    one-CPU nodes whose node holding ClientActor 1 is killed mid-run (`cluster`: one of 3
    workers to use, else a new one)."""
    import shutil

    from qgm_ray.runner import run as runner
    from qgm_ray.config import load_config
    from qgm_ray.plugins import ship_paths
    root = Path(__file__).resolve().parent.parent
    pkg = out / "elsewhere" / "byo_bed"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in ("clip_rule.py", "tiny_net.py", "blobs.py", "graphs.py"):
        shutil.copy(root / "examples" / name, pkg / name)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(out / "elsewhere"))
    overrides = ["algorithm.name=byo_bed.clip_rule:ClippedSGD", "model.name=byo_bed.tiny_net:tiny_mlp",
                 "data.name=byo_bed.blobs:blobs", "topology.name=byo_bed.graphs:ring_with_chords",
                 "progress=false", "ray.clients_per_actor=3", "ray.cpus_per_client=0.125",
                 "fault_tolerance.checkpoint_every=4", "fault_tolerance.keep=4"]

    def byo(*extra):
        return load_config(root / "examples" / "byo.yaml", overrides + list(extra))
    shipped = ship_paths(byo())
    local = runner.run(byo("backend=local"), out / "local", log=lambda m: None)
    own = cluster is None
    cluster = start_cluster(3) if own else cluster
    assert len(cluster.worker_nodes) == 3, cluster.worker_nodes
    try:
        killed = run_killing(cluster, out, "killed", byo("backend=ray"))
        return {"shipped": shipped, "head": cluster.head_node.node_id, "local": {"summary": local, "rows": rows(out / "local")},
                "killed": killed}
    finally:
        if own:
            stop(cluster)


def plugins_then_node_loss(out: Path) -> dict:
    """`plugins` and then `node_loss` on one cluster (a head and a Ray start the fewer): 3
    workers, the plug-in run loses one, a worker is added in its place, and the node-loss runs
    take the cluster from there."""
    cluster = start_cluster(3)
    try:
        plug = plugins(out / "plugins", cluster)
        add_worker(cluster)
        return {"plugins": plug, "node_loss": node_loss(out / "node_loss", cluster)}
    finally:
        stop(cluster)


SCENARIOS = {"node_loss": node_loss, "placement": placement, "joining": joining,
             "joining_then_placement": joining_then_placement, "plugins": plugins,
             "plugins_then_node_loss": plugins_then_node_loss}

if __name__ == "__main__":
    name, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    result = SCENARIOS[name](out)
    print(json.dumps(result, default=str))
