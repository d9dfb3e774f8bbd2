"""The `tracking:` section: which trackers it turns on, and their packages installed (checked
with the config, before anything starts)."""
from __future__ import annotations

import importlib.util

from qgm_ray.errors import ConfigError


# tracker -> (the module it imports, what to install when it is missing)
PACKAGES = {"tensorboard": ("tensorboardX", "pip install tensorboardX"),
            "mlflow": ("mlflow", "pip install mlflow-skinny  (or the qgm-ray[mlflow] extra)"),
            "wandb": ("wandb", "pip install wandb  (or the qgm-ray[wandb] extra)")}
WANDB_MODES = ("online", "offline", "disabled")


def enabled(tc) -> list[str]:
    """The trackers a `tracking:` section turns on, in the order they are fed."""
    return [name for name, on in (("tensorboard", tc.tensorboard), ("mlflow", tc.mlflow.tracking_uri is not None),
                                  ("wandb", tc.wandb.project is not None)) if on]


def check_installed(tc) -> None:
    """ConfigError, one line naming the key and the install, for an enabled tracker whose
    package is missing (found without importing it: mlflow's import alone takes seconds)."""
    for name in enabled(tc):
        module, install = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"tracking.{name} is on but the {module} package is not installed: {install}")
