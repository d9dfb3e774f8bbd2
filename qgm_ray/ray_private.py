"""Every name qgm-ray takes from Ray's private API (`ray._private`), in one place.

Ray may move or rename these in any release, so each is resolved through `get` (a one-line
error naming the name, the installed Ray and the Ray this code was written for) or `optional`
(the same line once as a warning, and None: for a use that has a fallback). requirements.txt
pins the Ray below; tests/test_ray_private.py checks the installed Ray is that one and that
every name here resolves in it.

Ray is imported only when a name is asked for, so importing this module costs nothing.
"""
from __future__ import annotations

import importlib
import logging

# The Ray release these names were read from (requirements.txt pins it).
WRITTEN_FOR = "2.60.0"

# Where Ray finds the address of the last `ray start` on this machine (ray.address=auto).
FIND_BOOTSTRAP_ADDRESS = "ray._private.services:find_bootstrap_address"
# Ray's constants: ENABLE_RAY_CLUSTER (the single-machine switch), DEBUG_AUTOSCALING_STATUS.
RAY_CONSTANTS = "ray._private.ray_constants"
# What ray.init installs its SIGTERM handler with.
SET_SIGTERM_HANDLER = "ray._private.utils:set_sigterm_handler"
# The driver's worker module: the console printer and the node (session and log directories).
WORKER = "ray._private.worker"
# Whether a cluster asks for a token (Ray's token authentication).
IS_TOKEN_AUTH_ENABLED = "ray._private.authentication.authentication_utils:is_token_auth_enabled"
# The logger of Ray's "token authentication is on" notice.
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
# Ray's uploader of local directories as runtime_env py_modules (what ray.init runs).
UPLOAD_PY_MODULES = "ray._private.runtime_env.py_modules:upload_py_modules_if_needed"

NAMES = (FIND_BOOTSTRAP_ADDRESS, RAY_CONSTANTS, SET_SIGTERM_HANDLER, WORKER, IS_TOKEN_AUTH_ENABLED, TOKEN_NOTICE_LOGGER,
         UPLOAD_PY_MODULES)
# Attributes read off the modules above.
ATTRIBUTES = (f"{RAY_CONSTANTS}:ENABLE_RAY_CLUSTER", f"{RAY_CONSTANTS}:DEBUG_AUTOSCALING_STATUS",
              f"{WORKER}:print_to_stdstream", f"{WORKER}:_global_node")


class PrivateAPIMoved(ImportError):
    """A `ray._private` name this code uses is not where Ray WRITTEN_FOR has it."""


def _ray_version() -> str:
    try:
        import ray
        return ray.__version__
    except Exception:  # noqa: BLE001 - no Ray at all: the message says so
        return "not installed"


def moved(name: str) -> str:
    """The one line for a private name this Ray does not have."""
    return (f"Ray's private {name.replace(':', '.')} is not in the installed Ray ({_ray_version()}); "
            f"qgm-ray was written for Ray {WRITTEN_FOR} (requirements.txt pins it)")


def get(name: str):
    """The module "ray._private.x" or the attribute "ray._private.x:attr"; PrivateAPIMoved
    (one line) if this Ray lacks it."""
    module, _, attr = name.partition(":")
    try:
        found = importlib.import_module(module)
        return getattr(found, attr) if attr else found
    except (ImportError, AttributeError):
        raise PrivateAPIMoved(moved(name)) from None


def module_of(name: str):
    """The module that holds "module:attr" (to replace the attribute there)."""
    return get(name.partition(":")[0])


_warned: set = set()


def optional(name: str):
    """get(name), or None for a use that works without it; the first time, `moved` as a warning."""
    try:
        return get(name)
    except PrivateAPIMoved as e:
        if name not in _warned:
            _warned.add(name)
            logging.getLogger(__name__).warning("%s; going on without it", e)
        return None
