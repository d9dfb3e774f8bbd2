"""The `Coordinator` actor: topology, round counter, the wiring of the dataflow, membership.

Between chunks of rounds it holds the run's ClientActors and their slots (created and placed
by engine/actor_start.py), evaluates, checkpoints, resizes and repairs (lost actors:
engine/actor_repair.py); a chunk of rounds it drives one of three ways, each the module of its
topic: a call per actor per round (engine/round_flow.py, which describes the dataflow), fused
rounds (engine/fused_coordinator.py) or an asynchronous run's waves
(engine/async_coordinator.py). A chunk ends with every client's round finished, so evaluation,
checkpoints, resizes and replacements happen only between chunks.

Plain class, wrapped with `ray.remote` by the engine (max_concurrency=2: `request_stop` must
get through while `run_rounds` runs; a lock serialises everything else).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Optional, Sequence

import numpy as np
import ray

from qgm_ray import build, errors
from qgm_ray.config import Config
from qgm_ray.engine import actor_repair, async_coordinator, exchange, fused_coordinator, mailbox, round_flow
from qgm_ray.engine.actor_repair import FAILURES
from qgm_ray.engine.actor_start import actor_runtime_env, actor_targets, alive_nodes, new_client_actor
from qgm_ray.engine.actors import expect_lost_payloads
from qgm_ray.engine.barriers import barriers_for
from qgm_ray.engine.base import groups_of
from qgm_ray.engine.exchange import Exchange
from qgm_ray.engine.stage import exchange_stage
from qgm_ray.engine.metrics import RunMetrics


def cross_node_bytes(topology, centralized: bool, n: int, t: int, k: int, nodes: list, payload_bytes: int) -> int:
    """Payload bytes that cross Ray nodes in round t with these actors (blocks of k) on these nodes."""
    return exchange.cross_node_bytes(topology, centralized, groups_of(n, k), t, nodes, payload_bytes)


class Coordinator:
    def __init__(self, cfg: Config, run: str, meta: dict, data_refs: list, parts_ref, slots: list[int],
                 resources: dict, counted_rounds: int = 0, n_train: int = 0):
        expect_lost_payloads()
        self.cfg, self.run, self.meta = cfg, run, meta
        self.data_refs, self.parts_ref = data_refs, parts_ref   # refs (nested: never resolved here)
        self.resources = resources   # {"num_cpus", "num_gpus"} of one ClientActor
        self.k = cfg.ray.clients_per_actor
        self.lock = threading.Lock()
        self.stop_requested = False
        self.metrics = RunMetrics(run, counted_rounds)   # `run`: the run's tag, not this actor's name
        self.actors: list = []
        self.nodes: list[str] = []     # node id of each actor
        self.known_nodes: set = set()  # alive nodes at the last placement: newer ones "joined"
        self.joined_used: list[str] = []
        self._fresh: set = set()
        self.slots: list[int] = []
        self.num_params = 0
        self.algorithm = build.build_algorithm(cfg)
        self.centralized = self.algorithm.centralized
        self.barriers = barriers_for(self.algorithm)   # engine/barriers.py: none unless the run asks for one
        self.n_train = n_train   # the epochs of a compressed exchange's warm-up (engine/stage.py)
        self.compressed = cfg.compression.op != "none"   # CHOCO-Gossip's exchange (engine/choco.py)
        self.initial_slots = list(slots)
        # py_modules: the plug-in code this coordinator was started with, for every ClientActor.
        self.runtime_env = actor_runtime_env(cfg)
        self.eval_pids: list[int] = []   # the process that answered each evaluation
        self.fused_refused = False       # a node's shared memory had no room for fused rounds
        self.mailboxes_open = False      # this chunk's actors hold outboxes (engine/mailbox.py)

    def reconfigure(self, *args) -> None:
        """A kept crew taking the next run (engine/crew.py): this coordinator and its actors in
        the state of new ones (same constructor arguments), their processes kept."""
        with self.lock:
            actors, nodes = self.actors, self.nodes
            self.__dict__.clear()
            self.__init__(*args)
            self.actors, self.nodes = actors, nodes
            gpu = self.resources["num_gpus"]
            ray.get([a.reconfigure.remote(self.cfg, self.meta, self.parts_ref, gpu, *self.data_refs)
                     for a in actors])

    def start(self, actors: Sequence = ()) -> dict:
        """Build the clients in the actors held (a kept crew's), in `actors`
        (actor_start.first_actors: a new coordinator's, created by the driver), or in actors
        created here (blocks while the cluster lacks resources)."""
        with self.lock:
            if actors:
                self.actors = list(actors)
            self._set_slots(self.initial_slots)
            return self.info()

    def _new_actor(self, node: Optional[str] = None):
        return new_client_actor(self.cfg, self.meta, self.parts_ref, self.data_refs, self.resources,
                                self.runtime_env, node)

    def _observe_nodes(self) -> list[dict]:
        """The alive nodes, noting which joined since the last placement (the engine logs
        those that get actors)."""
        alive = alive_nodes()
        alive_ids = {x["NodeID"] for x in alive}
        self._fresh = alive_ids - self.known_nodes if self.known_nodes else set()
        self.known_nodes = alive_ids
        return alive

    def _targets(self, n: int, fixed: dict, exclude=()) -> dict:
        """actor_targets on the nodes alive now."""
        return actor_targets(self.cfg, self.resources, self.centralized, n, self._observe_nodes(), fixed, exclude)

    def _set_slots(self, slots: list[int], states: Optional[list] = None) -> None:
        """Make the actors hold exactly `slots` (position i = slots[i]) in blocks of k; reuse
        live actors (they keep the clients they already hold), create or kill the rest.
        `states`: refs of one state dict per slot (restore), or None (keep / build fresh)."""
        groups = groups_of(len(slots), self.k)
        for extra in self.actors[len(groups):]:
            ray.kill(extra)
        self.actors, self.nodes = self.actors[:len(groups)], self.nodes[:len(groups)]
        alive = self._observe_nodes()
        if len(self.actors) < len(groups):   # placed around the actors that stay
            targets = actor_targets(self.cfg, self.resources, self.centralized, len(slots), alive,
                                    dict(enumerate(self.nodes)))
        while len(self.actors) < len(groups):
            self.actors.append(self._new_actor(targets.get(len(self.actors))))
        calls = []
        for actor, g in zip(self.actors, groups):
            args = [states[i] for i in g] if states is not None else []
            calls.append(actor.set_clients.remote([slots[i] for i in g], g, *args))
        where = [a.node_id.remote() for a in self.actors]
        self.num_params = ray.get(calls)[0]
        self._placed(ray.get(where))
        self.slots = list(slots)
        self.topology = build.build_topology(self.cfg, len(slots))

    def _placed(self, nodes: list[str]) -> None:
        self.joined_used = sorted({m for m in nodes if m in self._fresh} - set(self.nodes))
        self.nodes = list(nodes)

    def info(self) -> dict:
        ex = self._exchange()
        return {"slots": list(self.slots), "num_params": self.num_params, "n_actors": len(self.actors),
                "payload_bytes": ex.payload_bytes, "fused": fused_coordinator.fusable(self, ex),
                "metrics": {"run": self.run, "counted_rounds": self.metrics.counted_rounds,
                            "bytes_counted": self.metrics.bytes_counted},
                "actor_nodes": list(self.nodes), "joined_nodes_used": list(self.joined_used),
                "coordinator_node": ray.get_runtime_context().get_node_id()}

    def handles(self) -> list:
        return list(self.actors)

    def pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors])

    def request_stop(self) -> None:
        self.stop_requested = True

    def run_rounds(self, t0: int, lrs: list[float]):
        """Rounds t0 .. t0+len(lrs)-1. Yields a record per finished round, in order, then
        {"done": rounds}. A dead actor ends the chunk with {"failed": message}."""
        with self.lock:
            self.stop_requested = False
            self.inflight: deque = deque()   # (t, [record refs]) submitted, not yet collected
            self.finals: list = []
            try:
                yield from self._run(t0, lrs)
            except (*FAILURES, mailbox.PeerLost) as e:
                self._drain()
                fused_coordinator.close_mailboxes(self)   # before the driver hears of it: it may kill the actors next
                yield {"failed": errors.described(e)}
            finally:
                fused_coordinator.close_mailboxes(self)

    def _drain(self) -> None:
        """After a failure: wait for the chunk's other calls to end (they fail fast once a
        payload they need is lost) and read their errors, so that no call still runs when the
        engine restores a checkpoint, and Ray does not report them as unhandled."""
        for ref in [r for _, refs in self.inflight for r in refs] + self.finals:
            try:
                ray.get(ref, timeout=60)
            except Exception:  # noqa: BLE001 - the errors are the expected consequence
                pass

    def _exchange(self) -> Exchange:
        """The exchange stage of the actors as they are now (membership changes between chunks)."""
        return exchange_stage(self.cfg, self.algorithm, self.topology, groups_of(len(self.slots), self.k),
                              build.payload_floats(self.cfg, self.algorithm, self.num_params), self.n_train)

    def _run(self, t0: int, lrs: list[float]):
        """The chunk's rounds, driven as its exchange allows: an asynchronous run's waves, fused
        rounds, or a call per actor per round."""
        ex = self._exchange()
        if ex.schedule is not None:   # clock.mode=async: the schedule's waves (engine/async_ray.py)
            yield from async_coordinator.run(self, t0, lrs, ex)
            return
        if fused_coordinator.fusable(self, ex):
            refused = fused_coordinator.open_mailboxes(self, ex, t0)
            if refused is None:
                yield from fused_coordinator.run(self, t0, lrs, ex)
                return
            if not self.fused_refused:   # said once a run, in the driver's log
                yield {"note": f"rounds not fused, payloads through the object store: {refused}"}
            self.fused_refused = True
        yield from round_flow.run(self, t0, lrs, ex)

    def evaluate(self) -> dict:
        with self.lock:
            params = [a.params.remote() for a in self.actors]
            local = ([a.local_accuracies.remote(self.cfg.eval.batch_size, len(self.slots)) for a in self.actors]
                     if self.cfg.eval.local_models else [])
            # The first ClientActor evaluates the average (engine/actor_evaluation.py: the averaged model).
            out = ray.get(self.actors[0].evaluate_average.remote(*params))
            self.eval_pids.append(out.pop("evaluator_pid"))
            accs = [x for r in ray.get(local) for x in r]
            out["local_test_accuracy"] = float(np.mean(accs)) if accs else float("nan")
            self.metrics.on_eval(out)
            return out

    def state_refs(self) -> list:
        """Refs of each actor's list of client state dicts, in position order (the driver
        fetches them to write a checkpoint)."""
        with self.lock:
            return [a.state_dicts.remote() for a in self.actors]

    def load_states(self, slots: list[int], state_refs: list) -> None:
        """Restore: hold `slots`, client i loading the state behind state_refs[i]."""
        with self.lock:
            self._set_slots(list(slots), states=list(state_refs))

    def resize(self, n_clients: int, n_shards: Optional[int] = None) -> dict:
        """Elastic: leavers (the last positions) release their shards; joiners take free shards
        and start from the current average model with fresh optimizer state; the topology is
        rebuilt for the new n. Same semantics as LocalEngine.resize. Usable at run time
        (`ray.get_actor(name, namespace="qgm").resize.remote(n)`): it waits for the current chunk of rounds."""
        from qgm_ray.topology import validate_topology
        with self.lock:
            n_shards = n_shards or self.cfg.elastic.max_clients or self.cfg.topology.n_clients
            validate_topology(self.cfg.topology.name, n_clients, **self.cfg.topology.options)
            if n_clients == len(self.slots):
                return self.info()
            if n_clients > n_shards:
                raise ValueError(f"resize to {n_clients} clients: the data was cut into {n_shards} shards "
                                 f"(set elastic.max_clients)")
            avg = ray.put(ray.get(self.actors[0].average.remote(*[a.params.remote() for a in self.actors])))
            # Joiners adopt what each barrier keeps for the run (position 0 always stays).
            kept = ray.put(ray.get(self.actors[0].joiner_states.remote())) if self.barriers else None
            if n_clients < len(self.slots):
                slots = self.slots[:n_clients]
            else:
                free = [s for s in range(n_shards) if s not in self.slots]
                slots = self.slots + free[:n_clients - len(self.slots)]
            joiners = [s for s in slots if s not in self.slots]
            self._set_slots(slots)
            if joiners:
                ray.get([a.reset_clients.remote(joiners, avg, kept) for a in self.actors])
            if self.compressed:   # W changed: every public copy restarts at zero (engine/choco.py)
                ray.get([a.reset_exchange.remote() for a in self.actors])
            return self.info()

    def find_dead(self, timeout: float = 10.0) -> list[int]:
        """Indices of ClientActors that do not answer (engine/actor_repair.py)."""
        return actor_repair.find_dead(self, timeout)

    def repair(self, policy: str) -> dict:
        """After a failure: dead actors replaced (replay) or removed with their clients (drop);
        the lost slots, and the replacements not answered yet (engine/actor_repair.py)."""
        with self.lock:
            return actor_repair.repair(self, policy)

    def await_replacements(self, timeout: float) -> dict:
        """Wait up to `timeout` seconds for the pending replacements (engine/actor_repair.py)."""
        with self.lock:
            return actor_repair.await_replacements(self, timeout)

    def replan(self, resources: dict) -> list[int]:
        """Every actor started anew asking for `resources`; the actors to await (engine/actor_repair.py)."""
        with self.lock:
            return actor_repair.replan(self, resources)

    def evaluator_pids(self) -> list[int]:
        """The pid of the process that answered each evaluation so far (tests, operators)."""
        return list(self.eval_pids)

    def shutdown(self) -> None:
        fused_coordinator.close_mailboxes(self)
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
