"""The run's exchange stage, chosen in one place for every engine: what happens between a rule's
`pre_mix` and its `post_mix` (engine/exchange.py).

    clock.mode: async          -> AsyncExchange (engine/async_run.py): the schedule's events
    compression.op other than none -> ChocoExchange (engine/choco.py): CHOCO-Gossip's public copies
    otherwise                  -> Exchange: W(t), the all-reduce, push-sum, at the payload's wire

The local engine, the Ray coordinator and the Ray driver (whose clock reads the per-edge bytes)
each build theirs here, so they cannot disagree on the wire or the byte counts.
"""
from __future__ import annotations

from qgm_ray.engine import async_run, choco
from qgm_ray.engine.barriers import barriers_for
from qgm_ray.engine.exchange import Exchange
from qgm_ray.engine.wire import wire_of


def exchange_stage(cfg, rule, topology, groups, payload_floats: int, n_train: int) -> Exchange:
    """The exchange of these clients (`groups`: each block's graph positions) under `rule`, with
    payloads of `payload_floats` values; n_train sizes the epochs of CHOCO's warm-up and of the
    asynchronous schedule."""
    wire = wire_of(cfg)
    if cfg.clock.mode == "async":
        return async_run.exchange_for(cfg, rule, topology, groups, payload_floats, wire, n_train)
    return choco.exchange_for(choco.Choco.of(cfg, n_train), topology, rule.centralized, groups, payload_floats,
                              barriers_for(rule), wire)

