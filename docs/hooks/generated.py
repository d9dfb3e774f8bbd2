"""MkDocs hook: the pages generated from the code, so the site cannot drift from it.

A page holds a marker line; the build replaces it with markdown made from the same source the
command line uses:

    <!-- generated: config-keys -->   the table `qgm-ray config --keys` prints (describe_keys)
    <!-- generated: rule-knobs -->    each built-in rule's knobs and their defaults
    <!-- generated: api -->           a mkdocstrings block per name in `qgm_ray.__all__`

A marker the build does not know is an error, so a typo does not leave a page half empty.
"""
from __future__ import annotations

import html
import re

import qgm_ray

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def _cell(text: str) -> str:
    """Plain text as a table cell, shown as the terminal shows it: `<name>` is not an HTML tag,
    `*`, `_` and backticks are not emphasis or code, and a `|` does not end the cell."""
    text = html.escape(text, quote=False)
    text = re.sub(r"([\\`*_\[\]])", r"\\\1", text)
    return text.replace("|", "&#124;")


def parse_key_table(text: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, allowed / meaning) rows from `describe_keys()`'s fixed-width text:
    its header row gives where each column starts (a type or default may hold spaces)."""
    header, *lines = text.splitlines()
    starts = [0, header.index("type"), header.index("default"), header.index("allowed / meaning")]
    rows = []
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line)])]
        rows.append(tuple(cells))
    return rows


def config_keys() -> str:
    from qgm_ray.config import describe_keys

    out = ["| key | type | default | allowed / meaning |", "|---|---|---|---|"]
    for key, kind, default, text in parse_key_table(describe_keys()):
        out.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(text)} |")
    return "\n".join(out)


def rule_knobs() -> str:
    from qgm_ray.algorithms.registry import algorithm_class
    from qgm_ray.plugins import builtin_names

    out = ["| `algorithm.name` | knobs and their defaults |", "|---|---|"]
    for name in builtin_names("algorithm"):
        knobs = ", ".join(f"`{k}: {v!r}`" for k, v in algorithm_class(name).knobs().items())
        out.append(f"| `{name}` | {knobs} |")
    return "\n".join(out)


def api() -> str:
    """One heading and one mkdocstrings block per stable name, at the module that defines it
    (what `qgm_ray.<name>` resolves to), in the order of `__all__`."""
    blocks = []
    for name in qgm_ray.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(qgm_ray, name)
        module = getattr(obj, "__module__", "")
        if not module.startswith("qgm_ray"):   # a type alias (State): the module that exports it
            module = qgm_ray._EXPORTS[name]
        blocks.append(f"::: {module}.{name}")
    return "\n\n".join(blocks)


GENERATORS = {"config-keys": config_keys, "rule-knobs": rule_knobs, "api": api}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_uri}: unknown generated block {name!r}; "
                             f"known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)
