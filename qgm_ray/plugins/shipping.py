"""User code shipped to Ray's processes: the local paths of the packages or files a config's
references name (not installed code, not qgm_ray, not what Ray shipped already), and the
runtime_env that carries them as `py_modules` to an actor or to a sweep's job.
"""
from __future__ import annotations

import importlib.util
import os
import sysconfig
from typing import Iterable

from qgm_ray import ray_private
from qgm_ray.errors import ConfigError
from qgm_ray.plugins.registry import references


def _installed_roots() -> list[str]:
    """Where installed code lives (stdlib, site-packages): the cluster has its own copy."""
    roots = set()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(os.path.realpath(path))
    return sorted(roots)


def _within(path: str, roots: Iterable[str]) -> bool:
    path = os.path.realpath(path)
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def module_location(module_name: str) -> list[str]:
    """The directory of the top-level package of `module_name`, or the single .py file of a
    top-level module. [] when it cannot be found or is a compiled/built-in module."""
    top = module_name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:   # a package (regular or namespace)
        return [os.path.realpath(p) for p in spec.submodule_search_locations]
    if spec.origin and spec.origin.endswith(".py"):
        return [os.path.realpath(spec.origin)]
    return []


def _shipped_already(path: str) -> bool:
    # Inside a Ray worker, code that arrived by py_modules lives under the node's
    # runtime_resources directory: its processes' children inherit it, nothing to upload.
    return f"{os.sep}runtime_resources{os.sep}" in path


def ship_paths(cfg) -> list[str]:
    """Local paths Ray must ship for this config's plug-ins: their top-level packages or
    files, except those of the qgm_ray package itself, of installed distributions, and code
    that reached this process through Ray already."""
    own = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))   # qgm_ray/
    skip = _installed_roots() + [own]
    paths: list[str] = []
    for ref in references(cfg).values():
        module_name = ref.partition(":")[0].strip()
        for p in module_location(module_name):
            if not _within(p, skip) and not _shipped_already(p) and p not in paths:
                paths.append(p)
    return paths


def _current_py_modules() -> list[str]:
    """The py_modules URIs this Ray process runs with (a job's, a trial's, a parent's)."""
    try:
        import ray
        if not ray.is_initialized():
            return []
        return list(ray.get_runtime_context().runtime_env.get("py_modules") or [])
    except Exception:  # noqa: BLE001 - no Ray, or an API that moved: nothing inherited
        return []


def ray_runtime_env(cfg, base: dict | None = None) -> dict | None:
    """`base` (a Ray runtime_env, or None) plus `py_modules` for this config's plug-ins, for an
    actor this process creates (Ray connected). Ray takes local directories only in
    `ray.init`; for one actor they must be URIs, so the paths are uploaded here (zipped,
    content-addressed in the cluster's GCS: the same code is one upload however many runs or
    actors use it) with Ray's own uploader, the one `ray.init(runtime_env=...)` runs. The
    py_modules of this process itself are kept: a child of a Tune trial gets what the trial got."""
    env = dict(base or {})
    modules = _current_py_modules()
    paths = ship_paths(cfg)
    if paths:
        import tempfile

        try:
            upload_py_modules_if_needed = ray_private.get(ray_private.UPLOAD_PY_MODULES)
        except ray_private.PrivateAPIMoved as e:   # say how to ship by hand
            raise ConfigError(f"{e}: this Ray cannot ship plug-in code to an actor ({', '.join(paths)}); start Ray "
                              f"with ray.init(runtime_env={{'py_modules': {paths!r}}}) or install it on every node") from None
        with tempfile.TemporaryDirectory(prefix="qgm-ship-") as scratch:
            uploaded = upload_py_modules_if_needed({"py_modules": paths}, include_gitignore=True,
                                                   scratch_dir=scratch)
        modules += [u for u in uploaded["py_modules"] if u not in modules]
    if modules:
        have = list(env.get("py_modules") or [])
        env["py_modules"] = have + [m for m in modules if m not in have]
    return env or None


def job_runtime_env(cfg) -> dict | None:
    """For `ray.init(runtime_env=...)` (a sweep that starts or joins Ray): the plug-ins' local
    paths, which Ray uploads itself and every process of the job (Tune trials too) gets."""
    paths = ship_paths(cfg)
    return {"py_modules": paths} if paths else None
