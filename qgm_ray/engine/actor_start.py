"""Where and how a ClientActor starts: its options (resources, node, runtime_env), the nodes
it may go to, graph neighbours placed together (engine/placement.py), and the first actors of
a start, which the driver creates beside the Coordinator (engine/coordinator.py adopts them
and creates every later actor with the same functions)."""
from __future__ import annotations

from typing import Optional

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from qgm_ray import build, determinism, plugins
from qgm_ray.config import Config
from qgm_ray.engine import placement
from qgm_ray.engine.actors import ClientActor
from qgm_ray.engine.base import averages_everyone, groups_of


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

