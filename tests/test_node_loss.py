"""Node loss on a cluster with no room left (fault_tolerance.resource_wait_s): the re-plan rule
without Ray, the key's checks, and the scenario itself on a multi-node Ray on this machine
(tests/multinode_bed.py: a head with 0 CPUs, two one-CPU workers, 6 clients in 3 actors with
the default resources, the node of an actor killed mid-run). On the same cluster, first: the
plug-ins of examples/byo.yaml, which only the driver can import, lose a node with room left
on the others."""
import math

import pytest

from qgm_ray.config import load_config
from qgm_ray.errors import ConfigError

CPU_NODE = {"CPU": 1.0, "memory": 2.0 * 2**30, "object_store_memory": 80.0 * 2**20}
HEAD = {"CPU": 0.0, "memory": 2.0 * 2**30}


def cfg_of(*extra):
    return load_config(None, ["topology.n_clients=6", "ray.clients_per_actor=2"] + list(extra))


def test_resource_wait_s_defaults_to_a_minute_takes_null_and_refuses_negatives():
    assert cfg_of().fault_tolerance.resource_wait_s == 60.0
    assert cfg_of("fault_tolerance.resource_wait_s=null").fault_tolerance.resource_wait_s is None
    assert cfg_of("fault_tolerance.resource_wait_s=0").fault_tolerance.resource_wait_s == 0.0
    with pytest.raises(ConfigError) as e:
        cfg_of("fault_tolerance.resource_wait_s=-1")
    assert "fault_tolerance.resource_wait_s" in str(e.value) and "\n" not in str(e.value)


def test_replan_shares_the_one_core_left_among_the_three_actors():
    """The issue's cluster after the loss: the head and one worker; 3 actors of half a core
    each no longer fit, a third of a core each does, and packs on that one node."""
    from qgm_ray.engine.ray_setup import actor_resources, replan_resources
    cfg = cfg_of()
    before = actor_resources(cfg, 6, {"CPU": 2.0})
    assert (before["actors"], before["num_cpus"]) == (3, 0.5)
    plan = replan_resources(cfg, 6, 3, [HEAD, CPU_NODE], {"num_cpus": 0.5, "num_gpus": 0.0})
    assert plan == {"num_cpus": 0.3333, "num_gpus": 0.0}
    assert math.floor(1.0 / plan["num_cpus"]) >= 3


@pytest.mark.parametrize("nodes,n_actors,current,cpu", [
    ([CPU_NODE, CPU_NODE], 3, 1.0, 0.5),          # three one-core actors lost one of three nodes
    ([{"CPU": 3.0}, {"CPU": 2.0}], 7, 1.0, 0.5),  # packs node by node: 6 + 4 places for 7
    ([CPU_NODE], 4, 0.5, 0.25),                   # at the cap: 4 actors a core
])
def test_replan_packs_on_the_nodes_left(nodes, n_actors, current, cpu):
    from qgm_ray.engine.placement import actors_fit
    from qgm_ray.engine.ray_setup import replan_resources
    cfg = load_config(None, [f"topology.n_clients={2 * n_actors}", "ray.clients_per_actor=2"])
    plan = replan_resources(cfg, 2 * n_actors, n_actors, nodes, {"num_cpus": current, "num_gpus": 0.0})
    assert plan["num_cpus"] == cpu
    assert sum(actors_fit(x, {"CPU": plan["num_cpus"]}) for x in nodes) >= n_actors


@pytest.mark.parametrize("extra,nodes,n_actors,current", [
    ([], [CPU_NODE], 5, 0.5),                                 # 5 actors on 1 core: past 4 a core
    ([], [HEAD], 3, 0.5),                                     # no CPU left at all
    (["ray.cpus_per_client=0.25"], [CPU_NODE], 3, 0.5),       # explicit sizing is taken as given
    (["ray.cpus_per_actor=0.5"], [CPU_NODE], 3, 0.5),
    ([], [CPU_NODE], 3, 0.3333),                              # already the share that fits: nothing to gain
])
def test_replan_refuses_what_sharing_cannot_fit(extra, nodes, n_actors, current):
    from qgm_ray.engine.ray_setup import replan_resources
    cfg = load_config(None, [f"topology.n_clients={2 * n_actors}", "ray.clients_per_actor=2"] + extra)
    assert replan_resources(cfg, 2 * n_actors, n_actors, nodes, {"num_cpus": current, "num_gpus": 0.0}) is None


def test_replan_keeps_the_gpu_share_and_plans_for_the_largest_client_count():
    from qgm_ray.engine.ray_setup import replan_resources
    cfg = load_config(None, ["topology.n_clients=4", "ray.clients_per_actor=2", "elastic.max_clients=8"])
    gpu_node = {"CPU": 1.0, "GPU": 1.0}
    # 2 actors now, 4 at the run's largest n: the share leaves room for the grow.
    plan = replan_resources(cfg, 8, 2, [gpu_node], {"num_cpus": 1.0, "num_gpus": 0.5})
    assert plan == {"num_cpus": 0.25, "num_gpus": 0.5}
    # The GPU share is not re-planned: two actors of 0.75 GPU do not fit one GPU.
    assert replan_resources(cfg, 8, 2, [gpu_node], {"num_cpus": 1.0, "num_gpus": 0.75}) is None


@pytest.fixture(scope="module")
def plugins_then_node_loss(tmp_path_factory):
    """tests/multinode_bed.py `plugins_then_node_loss`: both scenarios on one cluster, in one
    process (a cluster start is tens of CPU-seconds)."""
    pytest.importorskip("ray")
    from test_multinode import scenario
    return scenario("plugins_then_node_loss", tmp_path_factory.mktemp("node_loss"), timeout=600)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.long
def test_node_killed_mid_run_is_replayed_to_identical_numbers(plugins_then_node_loss):
    """tests/multinode_bed.py `node_loss`: real raylets on this machine, default resources."""
    from test_multinode import same
    r = plugins_then_node_loss["node_loss"]
    ref = r["reference"]   # the local engine: Ray == local, bit for bit
    assert ref["summary"]["status"] == "completed" and ref["summary"]["backend"] == "local"

    # The cluster (two one-core workers, half a core an actor) loses a node: no room
    # left and none joins; the actors share the core left and the run equals the reference.
    rep = r["replan"]
    assert rep["killed"][0] and rep["workers_left"] == 1
    assert rep["summary"]["status"] == "completed", rep["summary"]["message"]
    assert rep["recoveries"] >= 1 and any("recovered from" in m for m in rep["logs"])
    planned = [m for m in rep["logs"] if "re-planned the run's" in m]
    assert len(planned) == 1 and "resource_wait_s=1s" in planned[0] and "0.5 -> 0.3333 CPU per actor" in planned[0]
    assert len(set(rep["actor_nodes"])) == 1 and r["head"] not in rep["actor_nodes"]   # all on the worker left
    assert rep["coordinator_node"] == r["head"]               # the coordinator lives with the driver
    assert same(ref["rows"], rep["rows"])                     # every metric, bit for bit
    assert rep["summary"]["final_test_accuracy"] == ref["summary"]["final_test_accuracy"]
    assert rep["summary"]["time_lost_seconds"] > 0 and any("later than before the failure" in m
                                                           for m in rep["logs"])

    # Room left on the other nodes: tests/test_plugins.py's multi-node lost node.

    wait = r["wait"]   # no room, resource_wait_s: null: waits, logs, uses the node that joins
    assert wait["summary"]["status"] == "completed", wait["summary"]["message"]
    waits = [m for m in wait["logs"] if "waiting" in m and "to replace lost actors" in m]
    assert waits and "resource_wait_s: null" in waits[0] and wait["joined"]
    assert not any("re-planned the run's" in m for m in wait["logs"])
    assert wait["joined"][0] in wait["actor_nodes"] and same(ref["rows"], wait["rows"])

    drop = r["drop"]   # three one-core workers: one actor on each, by default
    assert len(set(drop["placed_before_kill"])) == 3 and r["head"] not in drop["placed_before_kill"]
    assert drop["summary"]["status"] == "completed", drop["summary"]["message"]
    assert drop["summary"]["n_clients"] == 4 and drop["last_recovery"]["lost_slots"] == [2, 3]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.long
def test_plug_ins_on_a_multi_node_cluster_with_a_lost_node(plugins_then_node_loss):
    """tests/multinode_bed.py `plugins`: the plug-ins in a package only the driver can import, on
    three one-CPU worker nodes; a node killed mid-run is replayed to the local engine's numbers."""
    from test_multinode import SAME
    r = plugins_then_node_loss["plugins"]
    assert r["shipped"] and r["local"]["summary"]["status"] == "completed"
    killed = r["killed"]
    assert killed["summary"]["status"] == "completed", killed["summary"]
    assert len(set(killed["actor_nodes"])) >= 2   # the actors really are on several nodes
    assert killed["killed"][0] and killed["recoveries"] >= 1 and killed["coordinator_node"] == r["head"]
    # room left on the nodes that stay: the replacement goes there, not to the lost node
    assert killed["killed"][0] in killed["placed_before_kill"] and killed["killed"][0] not in killed["actor_nodes"]

    def same(rs):   # bytes_cross_node is 0 on the local engine, the rest is bit for bit
        return [{k: x[k] for k in SAME if k in x} for x in rs]
    assert len(killed["rows"]) == 4 and same(killed["rows"]) == same(r["local"]["rows"])
    assert int(killed["rows"][-1]["bytes_cross_node"]) > 0
