"""Which node each ClientActor runs on: graph neighbours share a node where resources allow.

Pure functions, no Ray. The client -> actor layout is given (each actor holds consecutive
graph positions, `groups`); this module only maps actors onto nodes.

Cost model. A payload is an object in the object store of its producer's node; Ray moves it
to another node once per round however many actors there read it. So the bytes that cross
nodes in round t are payload_bytes x the number of distinct (source position, reading node)
pairs with the reader on another node than the source (`cross_node_bytes`).

Assignment (`assign`): a greedy graph-growing cut. Each node in turn is filled up to its
share, starting from the lowest-numbered actor not yet placed and then always adding the
unplaced actor with the most payload traffic to the actors already there (ties: lowest
index). On a ring that gives contiguous segments, on a torus blocks of rows, on social and
custom graphs a BFS-grown partition. Shares are balanced (ceil(actors / usable nodes), less
where a node fits fewer actors), so every node keeps working: packing the whole graph into one
node would cut no edge and lose all parallelism.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np

from qgm_ray.sparse_w import as_sparse

# Time-varying graphs: the actor graph is the union of this many rounds' edges.
ROUNDS_FOR_GRAPH = 16


def actor_traffic(matrices: Iterable[np.ndarray], groups: Sequence[Sequence[int]]) -> np.ndarray:
    """A x A symmetric matrix: how many (position -> position) payload edges join each pair of
    actors, summed over the given mixing matrices."""
    actor_of = {p: a for a, g in enumerate(groups) for p in g}
    A = len(groups)
    T = np.zeros((A, A))
    for W in matrices:
        W = as_sparse(W)
        for i, j in zip(W.coo_rows().tolist(), W.cols.tolist()):
            a, b = actor_of.get(i), actor_of.get(j)
            if a is not None and b is not None and a != b:
                T[a, b] += 1
                T[b, a] += 1
    return T


def shares(capacity: dict, n_actors: int) -> dict:
    """How many actors each node takes: as even as the capacities allow (water-filling), never
    more than a node fits. Nodes listed with 0 capacity get 0; the sum may be < n_actors when
    the nodes cannot hold them all (the rest is left to Ray's scheduler)."""
    usable = {n: c for n, c in capacity.items() if c > 0}
    out = {n: 0 for n in capacity}
    if not usable:
        return out
    level = math.ceil(n_actors / len(usable))
    while True:
        got = {n: min(c, level) for n, c in usable.items()}
        if sum(got.values()) >= n_actors or all(got[n] == c for n, c in usable.items()):
            break
        level += 1
    out.update(got)
    return out


def assign(traffic: np.ndarray, capacity: dict, fixed: Optional[dict] = None) -> dict:
    """actor -> node for every actor not in `fixed` (actor -> node of live actors that stay).
    `capacity`: node -> how many actors it can hold in total (including fixed ones); node
    order breaks ties (pass them sorted). Actors that fit nowhere are left out."""
    fixed = dict(fixed or {})
    A = traffic.shape[0]
    quota = shares(capacity, A)
    on = {n: [a for a, m in fixed.items() if m == n] for n in capacity}
    placed = dict(fixed)
    # Nodes already holding actors grow around them first, then the empty ones, biggest first.
    order = sorted(capacity, key=lambda n: (not on[n], -quota[n]))
    for node in order:
        members = on[node]
        while len(members) < quota[node]:
            free = [a for a in range(A) if a not in placed]
            if not free:
                break
            if members:
                score = traffic[np.ix_(free, members)].sum(1)
                best = free[int(np.argmax(score))]   # argmax: first of the ties = lowest index
                if score.max() <= 0:
                    best = free[0]
            else:
                best = free[0]
            members.append(best)
            placed[best] = node
    return {a: n for a, n in placed.items() if a not in fixed}


def actors_fit(node_resources: dict, need: dict) -> int:
    """How many actors asking for `need` ({"CPU": c, "GPU": g}) fit in `node_resources`."""
    fits = [node_resources.get(r, 0.0) / v for r, v in need.items() if v > 0]
    return int(math.floor(min(fits) + 1e-9)) if fits else 10**6


def cross_node_bytes(W, groups: Sequence[Sequence[int]], node_of_actor: Sequence,
                     payload_bytes: int) -> int:
    """Payload bytes that leave their node in the round whose mixing matrix is W (a SparseW
    or a dense array). Memoised on W per layout: a static graph is counted once."""
    W = as_sparse(W)
    key = ("cross_node", tuple(map(tuple, groups)), tuple(node_of_actor))
    if key not in W.memo:
        node_of_pos = {p: node_of_actor[a] for a, g in enumerate(groups) for p in g}
        pairs = set()
        for a, g in enumerate(groups):
            here = node_of_actor[a]
            for i in g:
                for j in W.row(i)[0].tolist():
                    src = node_of_pos.get(j)
                    if src is not None and src != here:
                        pairs.add((j, here))
        W.memo[key] = len(pairs)
    return W.memo[key] * int(payload_bytes)


def allreduce_traffic(n_actors: int) -> np.ndarray:
    """The actor graph of an all-reduce (engine/allreduce.py): every actor sends its partial
    sum to the first one and reads the mean back (a star around actor 0)."""
    T = np.zeros((n_actors, n_actors))
    T[0, 1:] = T[1:, 0] = 2
    return T


def allreduce_cross_node_bytes(node_of_actor: Sequence, payload_bytes: int) -> int:
    """Bytes that leave their node in one all-reduce round: the partial sum of every actor on
    another node than actor 0 goes there, and the mean goes once to each other node."""
    if not node_of_actor:
        return 0
    root = node_of_actor[0]
    away = [m for m in node_of_actor[1:] if m != root]
    return (len(away) + len(set(away))) * int(payload_bytes)


def clients_per_node(groups: Sequence[Sequence[int]], node_of_actor: Sequence) -> dict:
    out: dict = {}
    for g, node in zip(groups, node_of_actor):
        out[node] = out.get(node, 0) + len(g)
    return out
