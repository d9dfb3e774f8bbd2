"""The `Coordinator` actor: topology, round counter, the wiring of the dataflow, membership.

Round t on the Ray engine, for the ClientActor holding positions G (k clients):

    refs = actor.step(post=(lr[t-1], rows of W(t-1) for G), pre_lr=lr[t], sources,
                      *payload_refs[t-1][j] for j in sources)     # -> exported payload refs + a record

`sources` are the in-neighbours of G held by other actors. The refs are top-level arguments,
so Ray hands the actor the resolved arrays (zero-copy from the node's object store, or pulled
from another node) and starts the call as soon as those payloads exist: there is no global
barrier, an actor runs ahead as far as its neighbours allow. The coordinator never fetches a
payload; it keeps only the refs of the last round (older ones are dropped once the calls that
read them are submitted, and Ray frees them when those calls finish) and waits for the small
records of round t - max_inflight_rounds before submitting round t, which bounds how many
rounds of payloads can sit in the object store. A chunk of rounds ends with a post-mix-only
call, so between chunks every client has finished its round (evaluation, checkpoints,
resizes and replacements happen only there).

Plain class, wrapped with `ray.remote` by the engine (max_concurrency=2: `request_stop` must
get through while `run_rounds` runs; a lock serialises everything else).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Optional, Sequence

import numpy as np
import ray
from ray.exceptions import (ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError,
                            RayActorError, WorkerCrashedError)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from qgm_ray import build, determinism, errors, plugins
from qgm_ray.config import Config
from qgm_ray.engine import exchange, fused, mailbox, placement
from qgm_ray.engine.async_ray import WavePlan, Waves
from qgm_ray.engine.actors import ClientActor, expect_lost_payloads
from qgm_ray.engine.barriers import barriers_for
from qgm_ray.engine.base import averages_everyone, groups_of
from qgm_ray.engine.exchange import Exchange
from qgm_ray.engine.stage import exchange_stage
from qgm_ray.engine.metrics import RunMetrics

# What "a process or node died" looks like to the caller of ray.get.
FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError, ObjectLostError, OwnerDiedError,
            WorkerCrashedError)


def cross_node_bytes(topology, centralized: bool, n: int, t: int, k: int, nodes: list, payload_bytes: int) -> int:
    """Payload bytes that cross Ray nodes in round t with these actors (blocks of k) on these nodes."""
    return exchange.cross_node_bytes(topology, centralized, groups_of(n, k), t, nodes, payload_bytes)


class NodeClientActor(ClientActor):
    """A ClientActor that says which Ray node it runs on (placement, repair, cross-node bytes)."""

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def actor_runtime_env(cfg: Config) -> Optional[dict]:
    """The runtime_env every ClientActor of this config names: the plug-in code (py_modules)
    and the determinism settings' environment; None: the creator's own."""
    env_vars = determinism.env_vars(cfg)
    return plugins.ray_runtime_env(cfg, {"env_vars": env_vars} if env_vars else None)


def new_client_actor(cfg: Config, meta: dict, parts_ref, data_refs: list, resources: dict,
                     runtime_env: Optional[dict], node: Optional[str] = None):
    """Create one ClientActor on `node` (None: where Ray puts it). The one place its options
    are chosen: the driver creates a start's actors with it, the coordinator every later one."""
    # Per actor (ray_setup.plan_resources): GPU room for k clients whatever it holds now, so a
    # resize can add clients to it later.
    cpu, gpu = resources["num_cpus"], resources["num_gpus"]
    # soft: a node that is full, gone or unknown falls back to Ray's own choice. No target:
    # no strategy at all, so that a placement group the caller runs in (Tune) captures it.
    where = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=True)} if node else {}
    if runtime_env:
        where["runtime_env"] = runtime_env
    cls = ray.remote(NodeClientActor).options(num_cpus=cpu, num_gpus=gpu, max_restarts=0, **where)
    return cls.remote(cfg, meta, parts_ref, gpu, *data_refs)


def alive_nodes() -> list[dict]:
    """Ray's alive nodes, by node id (the order placement breaks ties in)."""
    return sorted((x for x in ray.nodes() if x.get("Alive")), key=lambda x: x["NodeID"])


def actor_targets(cfg: Config, resources: dict, centralized: bool, n: int, alive: list[dict], fixed: dict,
                  exclude=()) -> dict:
    """actor index -> node for the actors of an n-client layout not in `fixed` (index -> node
    of live actors that stay), graph neighbours together (engine/placement.py), on the `alive`
    nodes but the excluded ones. {} with `ray.placement: default` or inside a placement group
    (a Tune trial): Ray's scheduler, or the group, places them."""
    if cfg.ray.placement != "graph" or n == 0 or ray.util.get_current_placement_group() is not None:
        return {}
    need = {"CPU": resources["num_cpus"], "GPU": resources["num_gpus"]}
    capacity = {x["NodeID"]: placement.actors_fit(x.get("Resources", {}), need)
                for x in alive if x["NodeID"] not in set(exclude)}
    topo = build.build_topology(cfg, n)
    groups = groups_of(n, cfg.ray.clients_per_actor)
    if averages_everyone(topo, centralized):
        traffic = placement.allreduce_traffic(len(groups))
    else:
        rounds = placement.ROUNDS_FOR_GRAPH if topo.time_varying else 1
        traffic = placement.actor_traffic((topo.sparse(t) for t in range(rounds)), groups)
    return placement.assign(traffic, capacity, {a: m for a, m in fixed.items() if m in capacity})


def first_actors(cfg: Config, meta: dict, parts_ref, data_refs: list, resources: dict, n: int,
                 centralized: bool) -> list:
    """The ClientActors of an n-client start, placed and created as the coordinator would
    create them (`Coordinator.start` adopts them). The driver creates them beside the
    coordinator: their processes start and import torch while the coordinator's does, instead
    of after it. Their handles must not outlive the call that hands them over: held by the
    coordinator alone, they die with it, as the actors it creates do."""
    targets = actor_targets(cfg, resources, centralized, n, alive_nodes(), {})
    env = actor_runtime_env(cfg)
    return [new_client_actor(cfg, meta, parts_ref, data_refs, resources, env, targets.get(i))
            for i in range(len(groups_of(n, cfg.ray.clients_per_actor)))]


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
        """Build the clients in the actors held (a kept crew's), in `actors` (first_actors: a
        new coordinator's, created by the driver), or in actors created here (blocks while the
        cluster lacks resources)."""
        with self.lock:
            if actors:
                self.actors = list(actors)
            self._set_slots(self.initial_slots)
            return self.info()

    # ------------------------------------------------------------ actors
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
                "payload_bytes": ex.payload_bytes, "fused": self._fusable(ex),
                "metrics": {"run": self.run, "counted_rounds": self.metrics.counted_rounds,
                            "bytes_counted": self.metrics.bytes_counted},
                "actor_nodes": list(self.nodes), "joined_nodes_used": list(self.joined_used),
                "coordinator_node": ray.get_runtime_context().get_node_id()}

    def handles(self) -> list:
        return list(self.actors)

    def pids(self) -> list[int]:
        return ray.get([a.pid.remote() for a in self.actors])

    # ------------------------------------------------------------ rounds
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
                self._close_mailboxes()   # before the driver hears of it: it may kill the actors next
                yield {"failed": errors.described(e)}
            finally:
                self._close_mailboxes()

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
        depth = self.cfg.ray.max_inflight_rounds
        ex = self._exchange()
        if ex.schedule is not None:   # clock.mode=async: the schedule's waves (engine/async_ray.py)
            yield from self._run_async(t0, lrs, ex)
            return
        if self._fusable(ex):
            refused = self._open_mailboxes(ex, t0)
            if refused is None:
                yield from self._run_fused(t0, lrs, ex)
                return
            if not self.fused_refused:   # said once a run, in the driver's log
                yield {"note": f"rounds not fused, payloads through the object store: {refused}"}
            self.fused_refused = True
        inflight = self.inflight
        # What the next round's post-mix reads: position -> payload ref (gossip) or the ref of
        # the mean (all-reduce); None before the first round.
        prev = None
        last_time = time.time()
        t = t0
        submitted = 0
        for idx, lr in enumerate(lrs):
            if self.stop_requested:
                break
            t = t0 + idx
            while len(inflight) >= depth:
                rec = self._collect(inflight[0], ex, last_time)
                inflight.popleft()
                last_time = time.time()
                yield rec
            post_lr = lrs[idx - 1] if prev is not None else None
            if post_lr is not None and ex.due(t - 1):
                # Round t - 1 ends with barriers (engine/barriers.py): post-only calls, the
                # barriers, then this round's calls only pre-mix.
                _, finals = self._calls(ex, t, post_lr, None, prev)
                self.finals.extend(finals)
                self._barriers(ex, t - 1, post_lr)
                post_lr = None
            prev, records = self._calls(ex, t, post_lr, lr, prev)   # the old refs are dropped here
            inflight.append((t, records))
            submitted += 1
        if prev is not None:  # finish the last round: post-mix only
            _, finals = self._calls(ex, t0 + submitted, lrs[submitted - 1], None, prev)
            self.finals.extend(finals)
            self._barriers(ex, t0 + submitted - 1, lrs[submitted - 1])
            prev = None
            while inflight:
                rec = self._collect(inflight[0], ex, last_time)
                inflight.popleft()
                last_time = time.time()
                yield rec
            ray.get(self.finals)
        yield {"done": submitted}

    def _calls(self, ex: Exchange, t: int, post_lr: Optional[float], pre_lr: Optional[float], prev):
        """One call per actor: finish round t - 1 (post-mix with `post_lr`, reading `prev`; None:
        nothing to finish) and start round t (pre-mix with `pre_lr`; None: post-mix only).
        Returns (what round t + 1's post-mix reads, the calls' record refs)."""
        if ex.all_reduce:
            # engine/allreduce.py: each actor returns one partial-sum row; the first actor adds
            # them in block order; every actor's next call reads the mean's ref.
            if pre_lr is None:
                return None, [a.step_mean.remote(post_lr, None, prev) for a in self.actors]
            partials, records = [], []
            for actor in self.actors:
                partial, record = actor.step_mean.options(num_returns=2).remote(post_lr, pre_lr, prev)
                partials.append(partial)
                records.append(record)
            return self.actors[0].mean_of.remote(ex.n, *partials), records
        payloads, records = {}, []
        for b, actor in enumerate(self.actors):
            if post_lr is not None:
                rows, sources = ex.wiring(t - 1, b)
                post, args = (post_lr, rows), [prev[j] for j in sources]
            else:
                post, sources, args = None, [], []
            # A compressed exchange decodes with the senders' keys: (seed, slot, round).
            keyed = {"t": t, "source_slots": [self.slots[j] for j in sources]} if self.compressed else {}
            if pre_lr is None:
                records.append(actor.step.remote(post, None, sources, *args, **keyed))
                continue
            # Only the rows another actor mixes next round go to the object store.
            sent = ex.exports(t, b)
            refs = actor.step.options(num_returns=len(sent) + 1).remote(post, pre_lr, sources, *args, export=sent,
                                                                        **keyed)
            refs = refs if sent else [refs]
            payloads.update(zip(sent, refs[:-1]))
            records.append(refs[-1])
        return (payloads if pre_lr is not None else None), records

    # ------------------------------------------------------------ fused rounds (engine/fused.py)
    def _fusable(self, ex: Exchange) -> bool:
        return fused.fusable(self.cfg.ray.rounds_per_call, ex, self.topology, self.compressed, self.nodes)

    def _open_mailboxes(self, ex: Exchange, t0: int) -> Optional[str]:
        """Every actor's outbox for fused rounds from t0; where the node's shared memory has no
        room for one, why (and none is kept: the chunk runs a call per round)."""
        prefix = mailbox.new_prefix()
        self.mailboxes_open = True   # from the first call on: an actor lost meanwhile leaves its peers' to close
        why = [w for w in ray.get([a.open_mailbox.remote(prefix, b, plan, t0)
                                   for b, (a, plan) in enumerate(zip(self.actors, fused.plans(ex, t0)))]) if w]
        if why:
            self._close_mailboxes()
            return why[0]
        ray.get([a.attach_mailbox.remote() for a in self.actors])
        ray.get([a.unlink_mailbox.remote() for a in self.actors])
        return None

    def _close_mailboxes(self) -> None:
        """Close the chunk's outboxes in every live actor: their memory and descriptors go back,
        and the names a peer lost before its first round left are removed with them."""
        if not self.mailboxes_open:
            return
        self.mailboxes_open = False
        refs = [a.close_mailbox.remote() for a in self.actors]
        # A dead actor's call fails at once (its names go with its peers' close); one that does
        # not answer in time is not waited for.
        ray.wait(refs, num_returns=len(refs), timeout=10)

    def _run_fused(self, t0: int, lrs: list[float], ex: Exchange):
        """Rounds t0.. as calls of many whole rounds each, the actors swapping payload rows
        through their node's shared memory. Two calls per actor are queued at most, so a stop
        request waits for two calls; every call ends with its rounds finished."""
        size, inflight = fused.RoundsPerCall(self.cfg.ray.rounds_per_call), self.inflight
        submitted, last_time = 0, time.time()
        while True:
            while submitted < len(lrs) and len(inflight) < 2 and not self.stop_requested:
                r = min(size.size, len(lrs) - submitted)
                inflight.append((t0 + submitted, [a.rounds.remote(t0 + submitted, lrs[submitted:submitted + r])
                                                  for a in self.actors]))
                submitted += r
            if not inflight:
                break
            t, refs = inflight[0]
            per_actor = self._fused_results(refs)
            inflight.popleft()
            now, rounds = time.time(), len(per_actor[0])
            size.observe(rounds, now - last_time)
            for i in range(rounds):   # the call's time, spread evenly over its rounds
                yield self._record(t + i, [x for losses in per_actor for x in losses[i]], ex,
                                   (now - last_time) / rounds)
            last_time = now
        # The outboxes live as long as the chunk (run_rounds closes them, whatever ended it).
        yield {"done": submitted}

    @staticmethod
    def _fused_results(refs: list) -> list:
        """Each actor's losses of one fused call. A call that stopped because a peer failed
        (PeerLost) is read past, so the peer's own error (a lost actor, or the exception a
        rule raised) is the one that surfaces."""
        out, lost = [], None
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except mailbox.PeerLost as e:
                lost = lost or e
        if lost is not None:
            raise lost
        return out

    # ------------------------------------------------------------ asynchronous runs
    def _run_async(self, t0: int, lrs: list[float], ex: Exchange):
        """Metrics rows t0.. of an asynchronous run: each row's waves, one `async_wave` call per
        actor with events in the wave or in the one before (engine/async_ray.py). Rows stream as
        rounds do, at most ray.max_inflight_rounds in flight; the chunk ends with post-only calls."""
        plan = WavePlan(ex.schedule, ex.groups, ex.W(0))
        depth, inflight = self.cfg.ray.max_inflight_rounds, self.inflight
        waves = Waves(plan, len(self.actors), self._async_call)
        # Each actor's copies of its in-neighbours' rings, from their owners (a restore's too).
        self.finals.extend(waves.begin(self._async_history, lambda b, rings: self.actors[b].async_begin.remote(*rings)))
        last_time, done = time.time(), 0
        for idx, lr in enumerate(lrs):
            if self.stop_requested:
                break
            while len(inflight) >= depth:
                rec = self._collect_row(inflight.popleft(), ex, last_time)
                last_time = time.time()
                yield rec
            inflight.append((t0 + idx, waves.row(t0 + idx, lr)))
            done += 1
        self.finals.extend(waves.finish())
        while inflight:
            rec = self._collect_row(inflight.popleft(), ex, last_time)
            last_time = time.time()
            yield rec
        ray.get(self.finals)
        yield {"done": done}

    def _async_history(self, b: int, positions: list) -> list:
        refs = self.actors[b].async_history.options(num_returns=len(positions)).remote(positions)
        return refs if len(positions) > 1 else [refs]

    def _async_call(self, b: int, deliver: list, post, pre: Optional[dict], k: int) -> list:
        """Actor b's `async_wave` (async_ray.Waves): its refs, k exported rows and the record."""
        msg, refs = post if post is not None else (None, [])
        out = self.actors[b].async_wave.options(num_returns=k + 1).remote(
            [(row, slot) for _, row, slot in deliver], msg, pre, *[ref for ref, _, _ in deliver], *refs)
        return out if k else [out]

    def _collect_row(self, item, ex: Exchange, since: float) -> dict:
        """An asynchronous row's record: its events' losses, in event order, as AsyncRun reads them."""
        t, refs = item
        n = ex.schedule.n
        losses = np.empty(n)
        for rec in ray.get(refs):
            losses[np.asarray(rec["events"], dtype=np.int64) - t * n] = rec["losses"]
        clients = ex.schedule.client[t * n:(t + 1) * n]
        return self._record(t, losses.tolist(), ex, time.time() - since, [self.slots[c] for c in clients.tolist()])

    def _barriers(self, ex: Exchange, t: int, lr: float) -> None:
        """The barriers that end round t (engine/barriers.py): every actor gathers, the first
        actor reduces in block order, every actor applies. Refs only: each actor runs these
        after the calls submitted before, and the gathered refs are dropped here, so Ray frees
        them once reduced. The small results join `finals` (waited for at the chunk's end,
        drained after a failure)."""
        for i, barrier in enumerate(ex.barriers):
            if not barrier.due(t):
                continue
            parts = [a.barrier_gather.remote(i) for a in self.actors]
            reduced = self.actors[0].barrier_reduce.remote(i, *parts)
            self.finals.extend(a.barrier_apply.remote(i, lr, reduced) for a in self.actors)

    def _collect(self, item, ex: Exchange, since: float) -> dict:
        t, refs = item
        losses = [x for r in ray.get(refs) for x in r["losses"]]   # position order, as LocalEngine
        return self._record(t, losses, ex, time.time() - since)

    def _record(self, t: int, losses: list[float], ex: Exchange, seconds: float, slots: Optional[list] = None) -> dict:
        """Round t's record and metrics from its losses (of `slots`, default position order)."""
        record = ex.record(t, float(np.mean(losses)), self.nodes)
        self.metrics.on_round(t, losses, self.slots if slots is None else slots, seconds, record.bytes_sent,
                              record.bytes_cross_node)
        return {"round": t, "loss": record.loss, "seconds": seconds, "bytes_sent": record.bytes_sent,
                "bytes_cross_node": record.bytes_cross_node}

    # ------------------------------------------------------------ evaluation
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

    # ------------------------------------------------------------ checkpoints, membership
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
        """Indices of ClientActors that do not answer (dead process or node)."""
        pings = [a.ping.remote() for a in self.actors]
        dead = []
        for i, p in enumerate(pings):
            try:
                ray.get(p, timeout=timeout)
            except FAILURES:
                dead.append(i)
            except ray.exceptions.GetTimeoutError:
                dead.append(i)
        return dead

    def repair(self, policy: str) -> dict:
        """After a failure: replace dead actors (replay: same clients, state restored later by
        load_states) or remove them with their clients (drop). Returns the lost slots at once;
        "pending" lists the replacements that have not answered yet (await_replacements).

        Replacements go to the nodes left (placement, away from the nodes where actors just
        died: such a node may be dying and not yet known dead). Whether to try again when one
        dies is not decided here: the engine reports it and the runner's restore repairs again."""
        with self.lock:
            dead = self.find_dead()
            groups = groups_of(len(self.slots), self.k)
            lost = [self.slots[i] for a in dead for i in groups[a]]
            suspect = {self.nodes[a] for a in dead if a < len(self.nodes)}
            for a in dead:
                try:
                    ray.kill(self.actors[a])
                except Exception:  # noqa: BLE001 - already gone
                    pass
            # Replacements not yet answered (actor index -> ref of its node id), and those that
            # died before answering; set here because every await or replan follows a repair.
            self._pending, self._unreplaced = {}, []
            if policy == "drop":
                self.actors = [a for i, a in enumerate(self.actors) if i not in dead]
                self.nodes = [m for i, m in enumerate(self.nodes) if i not in dead]
                slots = [s for s in self.slots if s not in lost]   # held from the restore (load_states) on
            else:
                slots = list(self.slots)
                live = {i: m for i, m in enumerate(self.nodes) if i not in dead}
                targets = self._targets(len(self.slots), live, exclude=suspect)
                for a in dead:
                    self.actors[a] = self._new_actor(targets.get(a))
                    self._pending[a] = self.actors[a].node_id.remote()
            return {**self.info(), "slots": slots, "dead_actors": dead, "lost_slots": lost,
                    "pending": sorted(self._pending)}

    def await_replacements(self, timeout: float) -> dict:
        """Wait up to `timeout` seconds for the pending replacements (repair, replan) to start.
        Returns info() with "waiting" (actor indices still waiting for resources) and
        "unreplaced" (those whose replacement died before it answered)."""
        with self.lock:
            refs = list(self._pending.values())
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout) if refs else ([], [])
            for a, ref in list(self._pending.items()):
                if ref not in ready:
                    continue
                del self._pending[a]
                try:
                    self.nodes[a] = ray.get(ref)
                except FAILURES:
                    self._unreplaced.append(a)
            return {**self.info(), "waiting": sorted(self._pending), "unreplaced": sorted(self._unreplaced)}

    def replan(self, resources: dict) -> list[int]:
        """The cluster as it is cannot hold the replacements: start every actor anew asking for
        `resources` (per actor; the same blocks), placed for them. The restore that follows
        (load_states) loads every client. Returns the actors to await."""
        with self.lock:
            self.resources = dict(resources)
            for a in self.actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            targets = self._targets(len(self.slots), {})
            self.actors = [self._new_actor(targets.get(i)) for i in range(len(self.actors))]
            self._pending = {i: a.node_id.remote() for i, a in enumerate(self.actors)}
            self._unreplaced = []
            return sorted(self._pending)

    def evaluator_pids(self) -> list[int]:
        """The pid of the process that answered each evaluation so far (tests, operators)."""
        return list(self.eval_pids)

    def shutdown(self) -> None:
        self._close_mailboxes()
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
