"""One registry for the extension points: update rules, models, datasets, graphs, compressors.

A config name (`algorithm.name`, `model.name`, `data.name`, `topology.name`, `compression.op`)
is either a registered name or a reference `"package.module:attr"` to user code, imported from
the working directory or PYTHONPATH. An installed distribution may also name its code in the
entry-point group of the kind (GROUPS: `qgm_ray.algorithms`, `qgm_ray.models`,
`qgm_ray.datasets`, `qgm_ray.graphs`, `qgm_ray.compressors`); such a short name stands for the
reference the entry point holds (`canonical`), so the run treats it exactly as that reference,
and a built-in name is never taken over by one. The built-ins register themselves here
(algorithms/registry.py, models/__init__.py, data/, topology/, compression/registry.py),
and `resolve(kind, name)` turns either form into a factory. Rules, models and compressors
register in the user's form; a built-in dataset registers as `(seed, root, download,
**options) -> Dataset` and a built-in graph as `(n, t, seed, options) -> W(t)` (they read
files and change per round), and a user's dataset or graph is adapted to that form where it
is called (data.load_plugin_dataset, topology.plugin_graph).

What a factory must be (README, "Bring your own method"):

    algorithm  a subclass of qgm_ray.Algorithm
    model      attr(input_shape, num_classes, **model.options) -> torch.nn.Module
    data       attr(seed, **data.options) -> (train_x, train_y, test_x, test_y)
    topology   attr(n, **topology.options) -> networkx Graph | DiGraph | n x n numpy W
    compressor a subclass of qgm_ray.compression.Compressor

Nothing here imports torch, Ray or networkx: config parsing stays cheap. Installed entry
points are read only for a name that is neither registered nor a reference (reading every
installed distribution's metadata takes a noticeable fraction of a second). A reference that
cannot be imported or names nothing is a ConfigError naming the key.

User code must also reach every process of a Ray run, on every node: `ship_paths(cfg)` finds
the top-level package (or single file) of each reference that is not part of an installed
distribution; `ray_runtime_env(cfg)` (an actor's) and `job_runtime_env(cfg)` (a sweep's
`ray.init`) turn them into Ray's `py_modules`, which Ray uploads once (content-addressed) and
unpacks on each node that runs a process of the run.

The registry and the checks of a factory's options are plugins/registry.py; the shipping is
plugins/shipping.py. Every name is importable from qgm_ray.plugins.
"""
from __future__ import annotations

from qgm_ray.plugins.registry import (GROUPS, KEYS, builtin_names, canonical, check_name, check_options, configured,
                                      import_reference, installed_names, installed_reference, is_reference, names,
                                      references, register, resolve, signature_options)
from qgm_ray.plugins.shipping import job_runtime_env, module_location, ray_runtime_env, ship_paths

__all__ = ["GROUPS", "KEYS", "builtin_names", "canonical", "check_name", "check_options", "configured",
           "import_reference", "installed_names", "installed_reference", "is_reference", "job_runtime_env",
           "module_location", "names", "ray_runtime_env", "references", "register", "resolve", "ship_paths",
           "signature_options"]
