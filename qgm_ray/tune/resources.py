"""What a trial reserves: its placement-group bundles (the trial process, one per ClientActor),
refused up front where the cluster could never hold them."""
from __future__ import annotations

from typing import Callable, Optional

from qgm_ray.config import Config
from qgm_ray.errors import ConfigError
from qgm_ray.tune.space import describe_params, grid_points, trial_config, trial_params


def trial_bundles(cfg: Config, cluster: Optional[dict] = None) -> list[dict]:
    """Placement-group bundles of one trial. The first bundle is the trial process itself.

    backend ray: the engine's Coordinator asks for no CPU (it fits in the first bundle); each
    ClientActor asks for what qgm_ray.engine.ray_setup.actor_resources gives on this cluster
    with the trial process's CPUs held back (the engine inside the trial computes the same), so
    the trial reserves one bundle per actor of that size. `cluster`: the Ray cluster's resources.
    """
    cluster = cluster or {}
    cluster_gpus = cluster.get("GPU", 0.0)
    wants_gpu = cfg.device == "cuda" or (cfg.device == "auto" and cluster_gpus > 0)
    if cfg.backend == "local":
        return [{"CPU": 1.0, "GPU": 1.0}] if wants_gpu else [{"CPU": 1.0}]
    from qgm_ray.build import max_clients
    from qgm_ray.engine.ray_setup import TRIAL_PROCESS_CPUS, actor_resources
    plan = actor_resources(cfg, max_clients(cfg), cluster, reserved_cpus=TRIAL_PROCESS_CPUS)
    actor = {"CPU": plan["num_cpus"], **({"GPU": plan["num_gpus"]} if plan["num_gpus"] > 0 else {})}
    # The trial process only drives the coordinator and writes outputs: half a CPU is plenty.
    # The first ClientActor evaluates the averaged model: no bundle of its own.
    return [{"CPU": TRIAL_PROCESS_CPUS}] + [dict(actor) for _ in range(plan["actors"])]


def check_fits(base: dict, tc, cluster: dict, autoscaling: bool = False) -> None:
    """A trial bigger than the whole cluster would wait forever (Tune only warns): refuse it."""
    if autoscaling:
        return
    for point in grid_points(tc):
        need: dict = {}
        for b in trial_bundles(trial_config(base, point), cluster):
            for r, v in b.items():
                need[r] = need.get(r, 0.0) + v
        short = {r: v for r, v in need.items() if v > cluster.get(r, 0.0) + 1e-6}
        if short:
            have = ", ".join(f"{cluster.get(r, 0.0):g} {r}" for r in short)
            raise ConfigError(
                f"trial {describe_params(point)} needs {', '.join(f'{v:g} {r}' for r, v in need.items())} "
                f"(backend={base['backend']}: trial process + ClientActors) but the Ray cluster "
                f"has {have}; set ray.cpus_per_actor: auto, lower ray.gpus_per_client, raise ray.num_cpus, or join "
                f"a bigger cluster (ray.address)")


def _resources_fn(base: dict, cluster: dict) -> Callable:
    def resources(params: dict):
        from ray import tune
        params = trial_params(params)
        return tune.PlacementGroupFactory(trial_bundles(trial_config(base, params), cluster))
    return resources
