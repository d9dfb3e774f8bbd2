"""The `tune.grid` section as the list of its trial points: plain keys and conditional branches.

A plain key (`data.alpha: [10, 0.1]`) holds a list of values, and every combination of the
keys is one point: Tune's `grid_search` on each key. A key that names a whole config section
(`algorithm`, `topology`, `compression`, ...) and holds a list of mappings is a conditional
grid: each mapping is one branch, a grid of its own over keys relative to the section (a list
holds the values of that key, any other value is its one value), and the trial takes one
branch at a time. An option that only one choice has is so set only with that choice:

    algorithm:
      - {name: [dsgd, dsgdm_n]}
      - {name: qg_dsgdm_n, options.clip: [1.0, 10.0]}

This is Tune's own conditional grid, `grid_search` over a list of dicts whose values may be
`grid_search` again (Tune expands the nested ones inside each branch); `qgm_ray.tune` hands Tune
exactly that, and these pure functions expand the same space before anything starts, to count
and validate every trial. A list-valued key (`options.betas`) is written as a list of lists,
as in a plain grid. Pure Python: the config imports it.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Optional


def is_conditional(key: str, values: Any) -> bool:
    """A section key whose values are mappings: branches (a plain key is dotted, or holds values)."""
    return ("." not in key and isinstance(values, list) and len(values) > 0
            and all(isinstance(v, dict) for v in values))


def branch_values(value: Any) -> list:
    """A branch's key: a list holds its values; any other value is its one value."""
    return value if isinstance(value, list) else [value]


def problem(grid: dict) -> Optional[str]:
    """What is wrong with the grid's shape, as one line naming the key, or None. Which keys
    exist and which values they take is the config's check, key by key and trial by trial."""
    if not isinstance(grid, dict):
        return f"tune.grid must be a mapping of dotted keys to lists of values, got {grid!r}"
    plain = {k for k, v in grid.items() if not is_conditional(k, v)}
    for key, values in grid.items():
        if not is_conditional(key, values):
            if "." not in key and isinstance(values, list) and any(isinstance(v, dict) for v in values):
                return (f"tune.grid.{key}: a conditional grid is a list of branches, each a mapping of "
                        f"keys under {key} to values, got {values!r}")
            continue
        for i, branch in enumerate(values):
            where = f"tune.grid.{key}[{i}]"
            if not branch:
                return f"{where}: an empty branch; give it at least one key, e.g. {{name: ...}}"
            for sub, value in branch.items():
                if not isinstance(sub, str) or not sub:
                    return f"{where}: {sub!r} is not a key (keys under {key}, dotted: options.clip)"
                full = f"{key}.{sub}"
                if full in plain:
                    return (f"{where}: {full} is also a grid key of its own; set it in one place "
                            f"(in every branch, or only as tune.grid.{full})")
                if isinstance(value, dict):
                    return (f"{where}.{sub}: a branch holds a list of values or one value, got the "
                            f"mapping {value!r} (branches do not nest)")
                if isinstance(value, list) and not value:
                    return f"{where}.{sub}: an empty list of values"
    return None


def _branch_points(key: str, branch: dict) -> list[dict]:
    subs = list(branch)
    return [{f"{key}.{s}": v for s, v in zip(subs, combo)}
            for combo in itertools.product(*(branch_values(branch[s]) for s in subs))]


def _alternatives(key: str, values: list) -> list[dict]:
    """The alternatives one grid key contributes, each a {dotted key: value} mapping."""
    if is_conditional(key, values):
        return [p for branch in values for p in _branch_points(key, branch)]
    return [{key: v} for v in values]


def _size(key: str, values: list) -> int:
    if is_conditional(key, values):
        return sum(math.prod(len(branch_values(v)) for v in branch.values()) for branch in values)
    return len(values)


def count(grid: dict) -> int:
    """Grid points, without listing them (the config bounds a sweep before anything is expanded)."""
    return math.prod(_size(k, v) for k, v in grid.items() if isinstance(v, list))


def points(grid: dict) -> list[dict]:
    """Every grid point as {dotted key: value}; a branch's keys only in its own points. The
    first key varies slowest; Tune lists the same points, a branch's own keys varying fastest."""
    per_key = [_alternatives(k, v) for k, v in grid.items()]
    return [{k: v for alt in combo for k, v in alt.items()} for combo in itertools.product(*per_key)]


def keys(grid: dict) -> list[str]:
    """Every dotted key a grid point may set, in order of first appearance."""
    out: dict = {}
    for key, values in grid.items():
        if is_conditional(key, values):
            for branch in values:
                out.update({f"{key}.{s}": None for s in branch})
        else:
            out[key] = None
    return list(out)


def flatten(params: dict) -> dict:
    """A trial's values as Tune hands them (a conditional key's value is its branch, a mapping
    of keys under the section) as dotted keys; dotted keys pass as they are, whatever their
    value (`data.options` may take a whole mapping)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and "." not in key:
            out.update({f"{key}.{s}": v for s, v in value.items()})
        else:
            out[key] = value
    return out


def point_of(values: dict, grid: dict) -> Optional[dict]:
    """The grid point a trial's config took, from its dotted values (`values`: {dotted key:
    value} for every key of `keys(grid)` the config holds): the first point all of whose keys
    agree. A trial's config alone does not say which branch set it, and a key a branch leaves
    out still has its default in the config."""
    for point in points(grid):
        if all(k in values and values[k] == v for k, v in point.items()):
            return point
    return None
