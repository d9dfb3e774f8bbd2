"""The package's layers, read from its source: no import runs back up.

    core (config, errors, the registries, layout, ...)  <  build (build, contracts)  <  engine  <  run
        <  tune, api, cli

A module imports only from its own layer or the layers below it; `bench/` is outside the
package, so nothing in qgm_ray imports it. An import inside a function only defers loading a
heavy dependency, so it counts as an arrow like any other.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qgm_ray"

# Layer of a module: the first matching prefix, most specific first; everything else is core.
LAYERS = (
    ("qgm_ray.build", 1, "build"),
    ("qgm_ray.contracts", 1, "build"),   # tries each plug-in as built from the config
    ("qgm_ray.engine", 2, "engine"),
    ("qgm_ray.runner", 3, "run"),
    ("qgm_ray.run", 3, "run"),
    ("qgm_ray.tune", 4, "tune/api/cli"),
    ("qgm_ray.api", 4, "tune/api/cli"),
    ("qgm_ray.cli", 4, "tune/api/cli"),
    ("qgm_ray.report", 4, "tune/api/cli"),
    ("qgm_ray.__main__", 4, "tune/api/cli"),
)
CORE = (0, "core")
TOP = (4, "tune/api/cli")
OUTSIDE = ("bench",)


def layer_of(module: str) -> tuple[int, str]:
    if module == "qgm_ray":   # the package's __init__: the public API, names resolved lazily
        return TOP
    for prefix, rank, name in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return rank, name
    return CORE


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth. `from a import b`
    yields a.b when b is a submodule, else a."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []   # (line, module); `from a import b, c` is one arrow
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                sub = f"{source}.{a.name}"
                is_sub = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PACKAGE.parent / Path(*sub.split(".")) / "__init__.py").exists()
                found.append((node.lineno, sub if is_sub else source))
    return sorted(set(found))


def violations(files) -> list[str]:
    """One line per arrow that runs back up (or out to bench/): where, what, which layers."""
    out = []
    for path in files:
        module = module_name(path)
        rank, name = layer_of(module)
        for line, target in imports_of(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target.split(".")[0] in OUTSIDE:
                out.append(f"{where}: {module} imports {target}, which is outside the package (bench/)")
            elif target.split(".")[0] == "qgm_ray":
                t_rank, t_name = layer_of(target)
                if t_rank > rank:
                    out.append(f"{where}: {module} (layer {name}) imports {target} (layer {t_name}), "
                               f"a layer above it")
    return out


def test_no_import_runs_back_up_the_layers():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, "the package's sources were not found"
    bad = violations(files)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A throwaway qgm_ray tree, so the checker is shown to catch what it must."""
    root = tmp_path / "qgm_ray"
    for rel in ("__init__.py", "engine/__init__.py", "engine/block.py", "config.py", "layout.py", "build.py", "runner.py",
                "run/__init__.py", "run/loop.py"):
        write(root, rel, "")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    return root


def test_a_lazy_import_up_the_layers_is_named(fake_package):
    build = write(fake_package, "build.py", "def f():\n    from qgm_ray.engine.block import Block\n")
    [line] = violations([build])
    assert line == ("qgm_ray/build.py:2: qgm_ray.build (layer build) imports qgm_ray.engine.block "
                    "(layer engine), a layer above it")


def test_relative_and_package_imports_resolve_to_their_module(fake_package):
    engine = write(fake_package, "engine/local.py", "from .. import runner\nfrom ..run import loop\n"
                                                    "from qgm_ray import config\nfrom . import block\n")
    assert [v.split(": ", 1)[1] for v in violations([engine])] == [
        "qgm_ray.engine.local (layer engine) imports qgm_ray.runner (layer run), a layer above it",
        "qgm_ray.engine.local (layer engine) imports qgm_ray.run.loop (layer run), a layer above it",
    ]


def test_bench_is_outside_the_package(fake_package):
    cli = write(fake_package, "cli.py", "import bench.harness\n")
    assert violations([cli]) == ["qgm_ray/cli.py:1: qgm_ray.cli imports bench.harness, "
                                 "which is outside the package (bench/)"]


def test_downward_and_sideways_imports_pass(fake_package):
    run = write(fake_package, "run/loop.py", "from qgm_ray.engine import block\nfrom qgm_ray import build, config\n"
                                             "import torch\nfrom .. import layout\n")
    assert violations([run]) == []
