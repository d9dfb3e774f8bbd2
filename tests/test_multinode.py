"""The Ray engine on a multi-node cluster (tests/multinode_bed.py): several raylets and object
stores on this machine. Each scenario runs in its own process (one driver joins one cluster
per process, and the session's single-node Ray is another cluster); a scenario prints its
result as JSON and the assertions live here (node loss: in tests/test_node_loss.py). This
file's two scenarios share one cluster and one process (a module fixture)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.long]
pytest.importorskip("ray")
BED = Path(__file__).with_name("multinode_bed.py")
SAME = ("round", "train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance", "bytes_sent",
        "n_clients")


def scenario(name, tmp_path, timeout=240):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # The checkout under test, whichever checkout the environment's qgm-ray was installed from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BED.parent.parent), env.get("PYTHONPATH")]))
    p = subprocess.run([sys.executable, str(BED), name, str(tmp_path)], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=BED.parent.parent)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def same(a, b):
    return [{k: r[k] for k in SAME} for r in a] == [{k: r[k] for k in SAME} for r in b]


@pytest.fixture(scope="module")
def joining_then_placement(tmp_path_factory):
    """Both scenarios of this file on one cluster, in one process (a cluster start is tens of
    CPU-seconds)."""
    return scenario("joining_then_placement", tmp_path_factory.mktemp("multinode"), timeout=480)


def test_graph_placement_halves_the_cross_node_bytes_of_a_spread_and_never_exceeds_ray_default(joining_then_placement):
    r = joining_then_placement["placement"]
    graph, default = r["graph"], r["default"]
    for x in (graph, default):
        assert x["summary"]["status"] == "completed"
        assert x["bytes_cross_node"] == x["cross_per_round"] * x["rounds"]   # metrics.csv column
        assert x["logs"] and "clients per node" in x["logs"][0]
    # ring of 16 in 8 actors over 4 one-CPU nodes (2 actors fit a node, so every placement uses
    # all 4): contiguous segments, 8 payloads cross per round, the fewest 4 nodes allow, half of
    # the 16 of actors dealt round-robin. Ray's default placement is not deterministic (8, 14
    # and 16 crossed in runs here): it can match the graph placement, never beat it.
    assert len(set(graph["actor_nodes"])) == 4 and graph["cross_per_round"] == 8 * graph["payload_bytes"]
    assert 2 * graph["cross_per_round"] == graph["spread_cross_per_round"] == 16 * graph["payload_bytes"]
    assert graph["cross_per_round"] <= default["cross_per_round"], (graph["actor_nodes"], default["actor_nodes"])
    print(f"\ncross-node bytes per round, ring 16 / 4 nodes: graph {graph['cross_per_round']} vs "
          f"Ray default {default['cross_per_round']}")


def test_node_joining_mid_run_is_used_by_the_next_grow(joining_then_placement):
    r = joining_then_placement["joining"]
    assert r["summary"]["status"] == "completed" and r["joined"]
    assert any("joined the cluster during the run" in m and r["joined"][0][:8] in m for m in r["logs"]), r["logs"]
    n = [int(x["n_clients"]) for x in r["rows"]]
    assert n[0] == 4 and 6 in n and n[-1] == 4
    assert same(r["local_rows"], r["rows"])   # the elastic run across nodes == the local engine
