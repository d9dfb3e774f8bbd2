"""The one YAML reading and writing of qgm-ray: config files, `--set` values, run and sweep
config.yaml files all go through `loads` and `dumps`.

PyYAML implements YAML 1.1, where a float needs a dot and a signed exponent: `1e-3`, `1.0e9`
and `-2E+5` would be strings, and every `options` dict (a rule's knobs, a dataset's options, a
Tune grid) would carry them as such. The loader here reads them as floats, as YAML 1.2 and
Python do; the dumper quotes a string that would read back as a float, so what it writes
reads back equal.

What a config may hold is bounded while reading: an alias expands to a copy of its anchor
wherever Python code walks the value (a dataclass conversion, a message quoting it), so a few
hundred bytes of nested aliases ("billion laughs") would exhaust memory after the read.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from qgm_ray.errors import ConfigError

# Far above any config a person writes, far below what takes time or memory to read.
MAX_BYTES = 1 << 20
# Scalars, lists and mappings counted with every alias expanded.
MAX_NODES = 100_000

_FLOAT_TAG = "tag:yaml.org,2002:float"
# The forms YAML 1.1 leaves out: an exponent without a dot or without a sign.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
_FIRST_CHARS = list("-+0123456789.")


class _Loader(yaml.SafeLoader):
    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return self.construct_document(node)


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, _FIRST_CHARS)


def _check_size(root: yaml.Node) -> None:
    """Refuse a document whose nodes, aliases expanded, exceed MAX_NODES (a recursive alias
    expands without end). Each distinct node is visited once: an alias costs its anchor's
    expanded size without being walked again."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError("holds a recursive alias (an anchor used inside itself); write the value out")
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            open_nodes.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [c for pair in node.value for c in pair]
            for child in children:
                total += size(child)
                if total > MAX_NODES:
                    break
            open_nodes.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise ConfigError(f"expands to more than {MAX_NODES:,} values (aliases counted as copies); "
                              "a config holds far fewer")
        return total

    size(root)   # as deep as the composer's own recursion, which has already been through it


def loads(text: str, where: str) -> Any:
    """`text` as Python values (floats for `1e-3` too). Raises a one-line ConfigError starting
    with `where` (what the text is: a file, a --set value) for a text over MAX_BYTES, a
    document over MAX_NODES or nested too deep, yaml.YAMLError for bad syntax."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: is {len(text):,} characters; a config holds at most {MAX_BYTES:,}")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nests lists or mappings too deep to read") from None
    finally:
        loader.dispose()


def dumps(data: Any, **kwargs: Any) -> str:
    """`data` as YAML that `loads` reads back equal (keyword arguments as yaml.dump's)."""
    return yaml.dump(data, Dumper=_Dumper, **kwargs)
