"""Actor -> node placement (engine/placement.py): pure functions, no Ray."""
import numpy as np

from qgm_ray.engine import placement as P
from qgm_ray.engine.base import groups_of
from qgm_ray.topology import make_topology


def layout(name, n, k, nodes, per_node, fixed=None):
    topo = make_topology(name, n)
    groups = groups_of(n, k)
    traffic = P.actor_traffic([topo.matrix(0)], groups)
    cap = {f"n{i}": per_node for i in range(nodes)}
    placed = {**(fixed or {}), **P.assign(traffic, cap, fixed)}
    return topo, groups, [placed.get(a) for a in range(len(groups))]


def test_ring_gets_contiguous_segments_and_half_the_cross_node_bytes_of_round_robin():
    topo, groups, nodes = layout("ring", 16, 2, 4, 2)
    assert nodes == ["n0", "n0", "n1", "n1", "n2", "n2", "n3", "n3"]
    graph = P.cross_node_bytes(topo.matrix(0), groups, nodes, 100)
    spread = P.cross_node_bytes(topo.matrix(0), groups, [f"n{a % 4}" for a in range(8)], 100)
    # 4 segment boundaries x 2 directions; round-robin cuts all 8 actor boundaries
    assert graph == 8 * 100 and spread == 16 * 100
    assert P.clients_per_node(groups, nodes) == {"n0": 4, "n1": 4, "n2": 4, "n3": 4}


def test_torus_and_social_graph_cuts():
    topo, groups, nodes = layout("torus", 16, 1, 4, 4)
    # 4x4 torus over 4 nodes: every tile of 4 has 8 edges leaving it, 32 payloads in all
    assert P.cross_node_bytes(topo.matrix(0), groups, nodes, 1) == 32
    topo, groups, nodes = layout("social", 32, 1, 4, 8)
    W = topo.matrix(0)
    rr = P.cross_node_bytes(W, groups, [f"n{a % 4}" for a in range(32)], 1)
    assert None not in nodes and P.cross_node_bytes(W, groups, nodes, 1) < 0.75 * rr


def test_payload_read_by_two_actors_on_one_node_crosses_once():
    W = np.ones((3, 3)) / 3
    assert P.cross_node_bytes(W, [[0], [1], [2]], ["a", "b", "b"], 10) == 10 * 3   # 0 -> b once; 1, 2 -> a


def test_shares_are_balanced_and_respect_capacity():
    assert P.shares({"a": 3, "b": 1, "c": 10}, 8) == {"a": 3, "b": 1, "c": 4}
    assert P.shares({"a": 1, "b": 0}, 3) == {"a": 1, "b": 0}      # the rest: Ray decides
    assert P.actors_fit({"CPU": 2.0, "GPU": 1.0}, {"CPU": 0.5, "GPU": 0.0}) == 4
    assert P.actors_fit({"CPU": 2.0}, {"CPU": 0.5, "GPU": 0.5}) == 0


def test_live_actors_stay_and_new_ones_join_their_neighbours():
    # actors 0-1 on n1 and 2 on n0 stay (a repair or a grow): 3 joins 2 on n0
    _, _, nodes = layout("ring", 16, 2, 4, 2, fixed={0: "n1", 1: "n1", 2: "n0"})
    assert nodes[:4] == ["n1", "n1", "n0", "n0"] and sorted(set(nodes[4:])) == ["n2", "n3"]
