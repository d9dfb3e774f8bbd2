"""Graphs: `function(n, **topology.options)` returning one of

  - a networkx Graph: weights Metropolis-Hastings, w_ij = 1 / (1 + max(deg_i, deg_j));
  - a networkx DiGraph: column stochastic (each client keeps and sends equal shares), gossiped
    with push-sum; the rule must have `push_sum = True`;
  - an n x n numpy W, used as it is: doubly stochastic, or column stochastic with
    `topology.options.directed: true`.

    topology: {name: examples.graphs:ring_with_chords, n_clients: 8, options: {every: 4}}

A parameter named `seed` gets the run's `seed`."""
import networkx as nx
import numpy as np


def ring_with_chords(n, every=4):
    """The ring plus a chord from every `every`-th client to the opposite one."""
    G = nx.cycle_graph(n)
    G.add_edges_from((i, (i + n // 2) % n) for i in range(0, n, every) if n > 3)
    return G


def one_way_ring(n):
    """Each client sends to the next one only: directed, push-sum."""
    return nx.DiGraph([(i, (i + 1) % n) for i in range(n)]) if n > 1 else nx.complete_graph(1, nx.DiGraph)


def lazy_ring(n, keep=0.5):
    """W = keep * I + (1 - keep) * ring with weights 1/2 to each side: doubly stochastic."""
    W = np.eye(n) * keep
    for i in range(n):
        W[i, (i - 1) % n] += (1 - keep) / 2
        W[i, (i + 1) % n] += (1 - keep) / 2
    return W
