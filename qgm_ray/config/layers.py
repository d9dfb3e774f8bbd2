"""A config as a plain dict, not yet built or checked: the built-in defaults <- a file's (or an
API dict's) nested keys <- dotted overrides, each section's options going with its name; and a
sweep trial's dict (its parameters over the sweep's)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from qgm_ray.config.moved import moved_nested, moved_values
from qgm_ray.config.read import parse_override, read_yaml
from qgm_ray.config.schema import Config


def _merge(base: dict, over: dict) -> dict:
    """Recursive merge; a mapping in `over` updates, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("grid", "search"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def get_dotted(d: dict, key: str) -> Any:
    cur = d
    for p in key.split("."):
        cur = cur[p]
    return cur


def config_dict(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults merged with the file and the overrides, as a plain dict (not yet validated)."""
    given = read_yaml(path) if path is not None else {}
    return layered(given, dict(parse_override(item) for item in overrides))


def layered(given: dict, values: dict) -> dict:
    """The built-in defaults <- `given` (a file's or a dict's nested keys) <- `values`
    ({dotted key: value} overrides), as a plain dict (not yet validated). Each layer's
    dataset (and rule, and plug-in model or graph) takes the options written for it: the
    defaults' mnist1d options do not go to a file's cifar10."""
    defaults = Config().to_dict()
    given = moved_nested(given)
    d = _merge(defaults, given)
    before = _names(defaults)
    for section, old in before.items():   # another dataset's options replace, never merge
        layer = given.get(section)
        if (isinstance(layer, dict) and isinstance(layer.get("options"), dict)
                and layer.get("name", old) != old and isinstance(d.get(section), dict)):
            d[section]["options"] = copy.deepcopy(layer["options"])
    _drop_foreign_options(d, before, {f"{section}.{key}" for section, keys in given.items()
                                      if isinstance(keys, dict) for key in keys})
    apply_overrides(d, values)
    # The file's client count was written for the file's graph: `--set topology.name=social` on
    # configs/default.yaml (a ring of 16) takes the social graph's size, as data.options go
    # with data.name (apply_overrides).
    def sets(mapping: dict, key: str) -> bool:
        return key in mapping or any(k == "topology" and isinstance(v, dict) and key.split(".")[1] in v
                                     for k, v in mapping.items())
    file_sets_n = isinstance(given.get("topology"), dict) and "n_clients" in given["topology"]
    if not sets(values, "topology.n_clients") and (not file_sets_n or sets(values, "topology.name")):
        size_from_graph(d)
    return d


def size_from_graph(d: dict) -> None:
    """A social graph fixes the client count: where the user did not set topology.n_clients,
    take the graph's size instead of the default 16 (which no social graph has)."""
    topo = d.get("topology")
    if not isinstance(topo, dict) or topo.get("name") != "social":
        return
    from qgm_ray.topology import DEFAULT_SOCIAL_GRAPH, SOCIAL_GRAPHS
    options = topo.get("options") if isinstance(topo.get("options"), dict) else {}
    graph = options.get("graph", DEFAULT_SOCIAL_GRAPH)
    if graph in SOCIAL_GRAPHS:   # an unknown graph is refused by validation, with the names
        topo["n_clients"] = SOCIAL_GRAPHS[graph][1]


def apply_overrides(d: dict, values: dict) -> dict:
    """Set dotted keys in `d` (in place; returned). A file's `data.options` are options of the
    file's dataset: when the overrides change `data.name` and do not set any data option
    themselves, the old options are dropped instead of being handed to another dataset
    (`--set data.name=cifar10` on configs/default.yaml must not fail on mnist1d's num_samples).
    The same holds for `algorithm.options` (a rule's own knobs) and, where a plug-in
    (`module:attr`) is involved, for `model.options` and `topology.options`; built-in models
    and graphs keep sharing their section's options as before."""
    before = _names(d)
    values = moved_values(values)
    for key, value in values.items():
        set_dotted(d, key, value)
    _drop_foreign_options(d, before, values)
    return d


_NAMED_SECTIONS = ("data", "algorithm", "model", "topology")


def _names(d: dict) -> dict:
    return {section: d[section].get("name") if isinstance(d.get(section), dict) else None
            for section in _NAMED_SECTIONS}


def _drop_foreign_options(d: dict, before: dict, set_keys) -> None:
    """Empty `<section>.options` where a layer changed `<section>.name` (from `before`)
    without setting any of that section's options (`set_keys`: the dotted keys it set)."""
    from qgm_ray.plugins import is_reference

    for section, old in before.items():
        new = d.get(section, {}).get("name") if isinstance(d.get(section), dict) else None
        sets_options = any(k == section or k.startswith(f"{section}.options") for k in set_keys)
        if new == old or sets_options or not isinstance(d.get(section), dict):
            continue
        if section in ("data", "algorithm") or is_reference(old) or is_reference(new):
            d[section]["options"] = {}


def trial_dict(base: dict, params: dict) -> dict:
    """The config dict of one sweep trial: `params` (dotted keys) over the sweep's `base`, with
    an empty tune section (a trial is a plain run). Shared by qgm_ray.tune and qgm_ray.report."""
    d = apply_overrides(copy.deepcopy(base), params or {})  # a grid over data.name drops the file's options
    d["tune"] = Config().to_dict()["tune"]
    return d
