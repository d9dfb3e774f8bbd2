"""The trainable: one trial as one full run in its own directory, each evaluation reported to
Tune, then the run's outcome."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from qgm_ray.tune.names import TRIALS
from qgm_ray.tune.space import describe_params, trial_config, trial_params


def _worst(mode: str) -> float:
    return 0.0 if mode == "max" else float("inf")


def _prepare_trial_dir(path: Path) -> bool:
    """A trial restarted by Tuner.restore finds its old run directory: resume from its own
    checkpoint when it has one, else start over (metrics.csv is appended, so it must go)."""
    from qgm_ray.runner.checkpoints import CheckpointStore
    if not path.exists():
        return False
    if CheckpointStore.of(path).list() and (path / "config.yaml").is_file():
        return True
    shutil.rmtree(path)
    return False


def run_trial(params: dict, base: dict, sweep_dir: str) -> None:
    """Tune function trainable: one run, every evaluation reported, then the outcome."""
    import torch
    from ray import tune

    from qgm_ray.runner import run as runner

    params = trial_params(params)
    cfg = trial_config(base, params)
    cfg.progress = False
    if cfg.backend == "local":
        torch.set_num_threads(cfg.compute.torch_threads)
    else:   # the sweep's next trial in this process takes this one's actors (engine/crew.py)
        cfg.ray.reuse_actors = True
    name = tune.get_context().get_trial_name()
    path = Path(sweep_dir) / TRIALS / name
    resume = _prepare_trial_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    metric, mode = base["tune"]["metric"], base["tune"]["mode"]
    best = {"acc": float("-inf")}
    last = {}

    def on_eval(row: dict) -> None:
        best["acc"] = max(best["acc"], row["test_accuracy"])
        last.clear()
        last.update(row)
        # Same keys in every report (Tune's progress.csv takes its header from the first one).
        tune.report({**row, "status": "running", "final_test_accuracy": row["test_accuracy"],
                     "best_test_accuracy": best["acc"]})

    with open(path / "log.txt", "a") as logf:
        def log(msg: str) -> None:
            logf.write(msg + "\n")
            logf.flush()
        log(f"trial {name}: {describe_params(params)} (qgm_ray from {Path(runner.__file__).parents[1]})")
        summary = runner.run(cfg, path, resume=resume, on_eval=on_eval, log=log, own_files=("log.txt",))

    final = {**last, "status": summary["status"],
             "final_test_accuracy": summary["final_test_accuracy"],
             "best_test_accuracy": summary["best_test_accuracy"],
             "wall_seconds": summary["wall_seconds"], "round": summary["rounds"]}
    for key in ("final_test_accuracy", "best_test_accuracy", "test_accuracy"):
        if final.get(key) is None:
            final[key] = float("nan")
    if summary["status"] != "completed" or metric not in final or not _finite(final[metric]):
        final[metric] = _worst(mode)  # schedulers and best-trial selection must not prefer it
    tune.report(final)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
