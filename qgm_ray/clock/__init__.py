"""Simulated time of a synchronous run: when each client starts each round, on a modelled
system of clients and links (the `clock:` config section). Numpy only; no torch, no engine.

The clock models the system being simulated, never the host that simulates it, and it never
reads the numbers the run computes: it is a function of the config, the graph W(t) and the
bytes each message has (the exchange stage's `edges`, so a compressed payload is a
shorter message). One round t of client i:

    compute_i(t) = step_seconds / (speed_i * trace_i(t)) * (slowdown if i straggles in t else 1)

Gossip (a client starts round t+1 once its own step of round t is done and every in-neighbour's
message of round t has arrived):

    start_i(t+1) = max over j in in(i) and i of
                   start_j(t) + compute_j(t) + [j != i] * (latency + bytes_{j->i} / bandwidth)

An all-reduce (the rules that mix the mean of everyone, the complete graph) waits for the last
client's step, then takes the time of a ring all-reduce of one payload of B bytes over n
clients: 2 (n - 1) steps (reduce-scatter, then all-gather), each sending a chunk of B / n bytes
to the next client on the ring and paying one latency:

    allreduce_seconds = 2 (n - 1) * (latency + (B / n) / bandwidth)

and every client starts the next round together. A round barrier (SlowMo's exact average) is
one more ring all-reduce of a payload behind a global barrier.

Modelled: per-client compute speed (lognormal factors, stragglers, a trace), per-message
latency and per-link bandwidth. Not modelled: congestion (links are independent, a client's
sends and receives overlap), packet loss, the host's real compute time (a model, not a
measurement), classes of links (every link has the same latency and bandwidth).

This package re-exports the clock's names. trace.py reads a trace file (clock.trace) into
per-client speed factors over time; model.py holds the durations (ClockModel: a client's local
step, a message on a link, an all-reduce; the speed factors and stragglers drawn from the seed);
rounds.py advances the clients' start times by one round.
"""
from __future__ import annotations

from qgm_ray.clock.model import BITS_PER_BYTE, MBPS, ClockModel, speed_factors, stragglers
from qgm_ray.clock.rounds import barrier_round, gossip_round, resized
from qgm_ray.clock.trace import TRACE_COLUMNS, Trace, read_trace

__all__ = ["BITS_PER_BYTE", "MBPS", "TRACE_COLUMNS", "ClockModel", "Trace", "barrier_round", "gossip_round",
           "read_trace", "resized", "speed_factors", "stragglers"]
