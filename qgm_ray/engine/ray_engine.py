"""The Ray engine, driver side: the same interface as LocalEngine, the clients in Ray actors.

    driver (RayEngine)  --small calls / records-->  Coordinator actor  --refs-->  ClientActors
                                                     (the first one also evaluates the averaged model)

The driver starts or joins Ray (ray_setup), puts the dataset into the object store once
(numpy arrays: every actor on a node maps the same memory and slices its own partition),
starts the Coordinator and, beside it, the ClientActors it adopts (actor_start.first_actors),
and then only exchanges small things with it: per-round records that feed the progress bar,
evaluation dicts, and the client states it writes to checkpoints. See coordinator.py (and
round_flow.py for the round dataflow) and actors.py for the workers.

Failures (a dead ClientActor or Coordinator: replaced or dropped, EngineFailure, the runner's
replay) are engine/ray_recovery.py's; waiting for resources (a start, a grow, lost actors'
replacements, the re-plan when no node joins) is engine/resource_wait.py's. The coordinator
runs on the driver's node (the head, on a cluster), so only the driver's node is needed to the
end. Actors are placed so that graph neighbours share a node (engine/placement.py); the log
says how many clients each node holds and how many payload bytes per round cross nodes.
"""
from __future__ import annotations

import functools
import time
import uuid
from typing import Callable, Optional

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from qgm_ray import build, plugins
from qgm_ray.config import Config
from qgm_ray.data import Dataset
from qgm_ray.engine.actors import dataset_meta
from qgm_ray.engine import crew, ray_recovery, resource_wait
from qgm_ray.engine.base import EngineFailure, RoundRecord, groups_of
from qgm_ray.engine.actor_start import first_actors
from qgm_ray.engine.actor_repair import FAILURES
from qgm_ray.engine.coordinator import Coordinator, cross_node_bytes
from qgm_ray.engine.stage import exchange_stage
from qgm_ray.engine.placement import clients_per_node
from qgm_ray.engine.ray_setup import TRIAL_PROCESS_CPUS, connect, plan_resources, resolve_clients_per_actor
from qgm_ray.errors import ConfigError

# Coordinators are named actors in this namespace, so an operator can reach a running one from
# another process: ray.get_actor("qgm-<name>-<id>", namespace="qgm").resize.remote(8)
NAMESPACE = "qgm"


def _settles(method):
    """The engine is clean (its actors may be kept for the next run: engine/crew.py) only
    between calls that returned: one that raised or was interrupted may leave work running."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self.clean = False
        out = method(self, *args, **kwargs)
        self.clean = True
        return out
    return wrapper


class RayEngine:
    def __init__(self, cfg: Config, ds: Dataset, parts: list, log: Callable[[str], None] = print,
                 mark: Optional[Callable[[str], None]] = None):
        """`mark("ray")` once Ray is up: the run's start-up record (runner/startup.py)."""
        self.cfg, self.log = cfg, log
        self.n_shards = len(parts)
        self.n_train = len(ds.train_x)   # the coordinator's epochs of a compressed run's warm-up
        self.dropped: set[int] = set()   # shards lost with `on_failure: drop`
        self.coordinator = None
        self.clean = False
        self.recoveries, self.last_recovery = 0, None
        # Time lost to failures: from the first time the run reached its furthest round to the
        # time the replay reached it again (recovery + replayed rounds).
        self.time_lost_seconds = 0.0
        self._frontier = (0, time.time())   # (rounds done, when first done)
        self._behind: Optional[tuple] = None
        self.started_ray = connect(cfg, log)
        if mark is not None:
            mark("ray")
        try:
            self.n_max = n_max = build.max_clients(cfg)
            # Everything below (coordinator, actors, resource plan) sees a number for k.
            self.cfg = cfg = resolve_clients_per_actor(cfg, n_max, ray.cluster_resources())
            # In a placement group (a Tune trial) the trial's process holds part of the cluster;
            # its actors ask for what tune.trial_bundles reserved for them.
            in_group = ray.util.get_current_placement_group() is not None
            self.resources = plan_resources(cfg, n_max, self.started_ray, log,
                                            reserved_cpus=TRIAL_PROCESS_CPUS if in_group else 0.0)
            self.meta = dataset_meta(ds)
            # Owned by the driver for the engine's lifetime; actors read them zero-copy.
            self.data_refs = [ray.put(np.ascontiguousarray(t.numpy()))
                              for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)]
            self.parts_ref = ray.put([np.asarray(p) for p in parts])
            self.centralized = build.build_algorithm(cfg).centralized
            self.name = f"qgm-{cfg.name}-{uuid.uuid4().hex[:6]}"
            # The metrics' `run` tag: this first name, kept when a dead coordinator is replaced
            # under a new name, so the dashboard's series of the run stay one series.
            self.run_tag = self.name
            self.counted_rounds = 0   # rounds in qgm_bytes_sent_total (a replay does not count twice)
            self._start(list(range(cfg.topology.n_clients)))
            self.clean = True
        except BaseException:
            self.close()
            raise

    def _start(self, slots: list[int]) -> None:
        # Plug-in code (`module:attr` names) travels with the coordinator; its ClientActors
        # inherit it (and the coordinator names it again: coordinator.runtime_env). Nothing else
        # goes in a runtime_env: a worker with one of its own starts through Ray's setup_worker (a
        # second Python and `import ray`) and cannot take a prestarted idle worker, and the
        # actors inherit the coordinator's.
        env = plugins.ray_runtime_env(self.cfg)
        # On the driver's node: the one node a run cannot lose anyway. Not soft: with a
        # runtime_env Ray's soft affinity may put it on a worker node, and losing that node
        # would take the whole run down with it.
        # Inside a placement group (a Tune trial) nothing is pinned: an explicit strategy would
        # take the actors out of the group the trial reserved. A Ray Client driver has no node.
        home, home_node = {}, None
        if ray.util.get_current_placement_group() is None and not ray.util.client.ray.is_connected():
            home_node = ray.get_runtime_context().get_node_id()
            home = {"scheduling_strategy": NodeAffinitySchedulingStrategy(home_node, soft=False)}
        args = (self.cfg, self.run_tag, self.meta, self.data_refs, self.parts_ref, slots, self.resources,
                self.counted_rounds, self.n_train)
        k = self.cfg.ray.clients_per_actor
        self.crew_key = crew.crew_key(self.resources, k, env, self.cfg.deterministic, home_node)
        kept = None
        if self.cfg.ray.reuse_actors:
            kept = crew.take(self.crew_key)
        else:   # actors kept by an earlier run would hold CPUs this run may need
            crew.release()
        if kept is not None:
            self.coordinator, self.name = kept.coordinator, kept.name
            self._wait(self.coordinator.reconfigure.remote(*args), f"for {len(slots)} clients")
            started = self.coordinator.start.remote()
        else:
            cls = ray.remote(Coordinator).options(name=self.name, namespace=NAMESPACE, num_cpus=0, max_concurrency=2,
                                                  max_restarts=0, runtime_env=env, **home)
            self.coordinator = cls.remote(*args)
            # The ClientActors start beside the coordinator (actor_start.first_actors); once the
            # call holds their handles the driver lets go of them, so they die with the coordinator.
            started = self.coordinator.start.remote(first_actors(self.cfg, self.meta, self.parts_ref, self.data_refs,
                                                                 self.resources, len(slots), self.centralized))
        self._apply(self._wait(started, f"for {len(slots)} clients"))
        self.log(f"ray: {self.n_clients} clients in {self._info['n_actors']} ClientActor(s) of up to {k}"
                 f"{' (kept from the last run)' if kept is not None else ''}; coordinator actor {self.name!r} "
                 f"in namespace {NAMESPACE!r} (metrics tag run={self.run_tag})"
                 f"{'; rounds fused, payloads through shared memory' if self._info['fused'] else ''}")
        self._log_placement()

    def _wait(self, ref, what: str):
        """ray.get(ref), logging while new actors wait for resources (engine/resource_wait.py)."""
        return resource_wait.wait(self, ref, what)

    def _log_placement(self) -> None:
        per_node = clients_per_node(groups_of(self.n_clients, self.cfg.ray.clients_per_actor),
                                    self._info["actor_nodes"])
        shown = ", ".join(f"{node[:8]}: {c}" for node, c in sorted(per_node.items()))
        self.log(f"ray: clients per node ({len(per_node)} node(s), {self.cfg.ray.placement} placement): {shown}; "
                 f"payload bytes crossing nodes in round 0: {self.cross_node_bytes(0)} of "
                 f"{int(self.exchange.edges(0)[2].sum())}")   # the gossip's (compressed) wire bytes

    def _apply(self, info: dict) -> None:
        self._info = info
        self.slots = list(info["slots"])
        self.n_clients = len(self.slots)
        self.topology = build.build_topology(self.cfg, self.n_clients)
        # What the coordinator's exchange is for these clients, here in the driver: the run's clock
        # reads its per-edge bytes (the actors' blocks do not change them).
        algorithm = build.build_algorithm(self.cfg)
        self.exchange = exchange_stage(self.cfg, algorithm, self.topology,
                                       groups_of(self.n_clients, self.cfg.ray.clients_per_actor),
                                       build.payload_floats(self.cfg, algorithm, info["num_params"]), self.n_train)

    def _refresh(self) -> None:
        self._apply(self._call("info"))

    def cross_node_bytes(self, t: int) -> int:
        """Payload bytes that move between Ray nodes in round t with the actors where they are."""
        return cross_node_bytes(self.topology, self.centralized, self.n_clients, t, self.cfg.ray.clients_per_actor,
                                self._info["actor_nodes"], self.payload_bytes)

    @property
    def payload_bytes(self) -> int:
        return self._info["payload_bytes"]

    def close(self) -> None:
        # A run that ended cleanly leaves its actors to the next one (engine/crew.py); a Ray this
        # engine started goes down with it, actors and all.
        if (self.coordinator is not None and self.cfg.ray.reuse_actors and self.clean and not self.started_ray
                and ray.is_initialized()):
            crew.keep(crew.Crew(self.crew_key, self.coordinator, self.name))
            self.coordinator = None
        if self.coordinator is not None:
            crew.stop(self.coordinator)
            self.coordinator = None
        if self.started_ray and ray.is_initialized():
            ray.shutdown()
            self.started_ray = False

    @_settles
    def train(self, rounds: range, lr_of: Callable[[int], float],
              on_round: Optional[Callable[[RoundRecord], None]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> list[RoundRecord]:
        records: list[RoundRecord] = []
        if len(rounds) == 0 or (should_stop is not None and should_stop()):
            return records
        lrs = [float(lr_of(t)) for t in rounds]
        stop_sent = False
        try:
            self._refresh_logging_resizes(rounds.start)   # a resize between chunks
            stream = self.coordinator.run_rounds.options(num_returns="streaming").remote(rounds.start, lrs)
            for ref in stream:
                rec = ray.get(ref)
                if "failed" in rec:
                    ray_recovery.recover(self, rec["failed"])
                if "done" in rec:
                    break
                if "note" in rec:
                    self.log(f"ray: {rec['note']}")
                    continue
                record = RoundRecord(round=rec["round"], loss=rec["loss"], bytes_sent=rec["bytes_sent"],
                                     bytes_cross_node=rec["bytes_cross_node"])
                records.append(record)
                self.counted_rounds = max(self.counted_rounds, record.round + 1)
                ray_recovery.progress(self, record.round + 1)
                if on_round is not None:
                    on_round(record)
                if not stop_sent and should_stop is not None and should_stop():
                    self.coordinator.request_stop.remote()
                    stop_sent = True
        except FAILURES as e:
            self._on_failure(e)
        self._refresh_logging_resizes(rounds.start + len(records))
        return records

    def _refresh_logging_resizes(self, at_round: int) -> None:
        """Pick up a run-time Coordinator.resize (from another process) and say so in the log."""
        before = self.n_clients
        self._refresh()
        if self.n_clients != before:
            self.log(f"elastic: live resize (Coordinator.resize) at round {at_round}: "
                     f"{before} -> {self.n_clients} clients")

    def _call(self, method: str, *args):
        """ray.get(coordinator.method(*args)), turning a dead actor into EngineFailure."""
        try:
            return ray.get(getattr(self.coordinator, method).remote(*args))
        except FAILURES as e:
            self._on_failure(e)

    def _on_failure(self, err: Exception) -> None:
        """A call failed: the coordinator's or an actor's death, EngineFailure (engine/ray_recovery.py)."""
        ray_recovery.on_failure(self, err)

    def _restart(self, reason: str) -> None:
        if self._behind is None:
            self._behind = self._frontier
        slots = [s for s in self.slots if s not in self.dropped]
        try:
            ray.kill(self.coordinator)
        except Exception:  # noqa: BLE001
            pass
        self.name = f"qgm-{self.cfg.name}-{uuid.uuid4().hex[:6]}"
        try:
            self._start(slots)
        except FAILURES as e:   # an actor of the new coordinator died too: the next restore retries
            raise EngineFailure(f"{reason}; starting a new one failed too ({type(e).__name__})") from None
        raise EngineFailure(reason)

    @_settles
    def evaluate(self) -> dict:
        return self._call("evaluate")

    @_settles
    def state_dict(self) -> dict:
        try:
            per_actor = ray.get(ray.get(self.coordinator.state_refs.remote()))
        except FAILURES as e:
            self._on_failure(e)
        return {"slots": list(self.slots), "clients": [s for states in per_actor for s in states]}

    @_settles
    def load_state_dict(self, state: dict) -> None:
        keep = [i for i, s in enumerate(state["slots"]) if s not in self.dropped]
        slots = [int(state["slots"][i]) for i in keep]
        clients = [state["clients"][i] for i in keep]
        if len(keep) < len(state["slots"]):
            # Dropped clients changed W: the compressed exchange's public copies restart at zero
            # (engine/choco.py), as at a resize.
            clients = [{k: v for k, v in c.items() if k != "exchange"} for c in clients]
        refs = [ray.put(c) for c in clients]
        self._call("load_states", slots, refs)
        self._refresh()

    @_settles
    def resize(self, n_clients: int, at_round: int) -> None:
        from qgm_ray.topology import validate_topology
        validate_topology(self.cfg.topology.name, n_clients, **self.cfg.topology.options)
        if n_clients > self.n_shards:
            raise ConfigError(f"elastic: {n_clients} clients at round {at_round}, but the data was cut into "
                              f"{self.n_shards} shards; set elastic.max_clients >= {n_clients}")
        self._apply(self._wait_call("resize", n_clients, self.n_shards))
        joined = self._info["joined_nodes_used"]
        if joined:
            self.log(f"ray: node(s) {', '.join(m[:8] for m in joined)} joined the cluster during the run; "
                     f"the resize to {n_clients} clients placed actors there")
        self._log_placement()

    def _wait_call(self, method: str, *args):
        """As _call, logging while new actors wait for resources (a grow waits for a node)."""
        try:
            return self._wait(getattr(self.coordinator, method).remote(*args), f"for {method}{args}")
        except FAILURES as e:
            self._on_failure(e)

    def actor_handles(self) -> list:
        """The ClientActors' handles. A handle held keeps its actor alive: one of the start's
        (the driver's: actor_start.first_actors) then outlives a dead coordinator."""
        return ray.get(self.coordinator.handles.remote())

    def actor_pids(self) -> list[int]:
        return ray.get(self.coordinator.pids.remote())
