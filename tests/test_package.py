"""qgm-ray as an installable package (pyproject.toml) and plug-ins by entry point.

A wheel built from the package's own files holds qgm_ray and nothing of the checkout. Installed
into a fresh virtual environment together with a small plug-in distribution (a rule, a model, a
dataset and a graph registered in the entry-point groups), it runs from another directory as
`qgm-ray` and `python -m qgm_ray`, and the plug-in runs by its short names on both engines with
the same numbers. The environment is new and this test's own (`python -m venv --without-pip`);
it sees the project's environment through one .pth line, so nothing is downloaded and the
project's environment is never written to (`--ignore-installed`: pip uninstalls nothing)."""
import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import qgm_ray
from qgm_ray import plugins
from qgm_ray.config import dump_yaml
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SAME = ("round", "train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance", "bytes_sent",
        "n_clients", "test_loss")

# The plug-in distribution: examples/' rule, model, dataset and graph under short names, and
# `ring`, which a built-in already takes.
DEMO = "qgm_demo_plugins"
ENTRY_POINTS = {
    "qgm_ray.algorithms": {"demo_heavy_ball": f"{DEMO}.heavy_ball:HeavyBallDSGD"},
    "qgm_ray.models": {"demo_mlp": f"{DEMO}.tiny_net:tiny_mlp"},
    "qgm_ray.datasets": {"demo_blobs": f"{DEMO}.blobs:blobs"},
    "qgm_ray.graphs": {"demo_chords": f"{DEMO}.graphs:ring_with_chords", "ring": f"{DEMO}.graphs:lazy_ring"},
}
DEMO_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "qgm-demo-plugins"
version = "1.0"

[tool.setuptools]
packages = ["qgm_demo_plugins"]
""" + "".join(f'\n[project.entry-points."{group}"]\n' + "".join(f'{name} = "{ref}"\n' for name, ref in eps.items())
              for group, eps in ENTRY_POINTS.items())

# A run of seconds, by the plug-in's short names: 2 clients.
TINY = """\
name: tiny
progress: false
data: {name: demo_blobs, options: {num_samples: 400, num_features: 10, num_classes: 3}, alpha: 1.0, batch_size: 16}
model: {name: demo_mlp, options: {width: 16}}
topology: {name: demo_chords, n_clients: 2}
algorithm: {name: demo_heavy_ball, lr: 0.05}
schedule: {epochs: 1}
eval: {every_epochs: 0.5}
ray: {num_cpus: 2}
"""


def rows(run_dir) -> list[dict]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: r[k] for k in SAME} for r in csv.DictReader(f)]


def run(*cmd, cwd, timeout=300) -> subprocess.CompletedProcess:
    """A command as a user of the new environment runs it: no PYTHONPATH, not in the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p.stdout


def new_venv(path: Path) -> Path:
    """A virtual environment that also sees this one's packages (one .pth line); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = Path(ok(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=path)).strip())
    base = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (site / "qgm_ray_test_base.pth").write_text("".join(f"{p}\n" for p in sorted(base)))
    return python


def pip(python: Path, *args, cwd) -> str:
    # --no-index --no-deps: offline, and the dependencies are those of the environment seen
    return ok(run(python, "-m", "pip", *args, "--no-index", "--no-deps", "--no-build-isolation", "-q", cwd=cwd))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The project's package files alone (no checkout around them) and the demo distribution,
    built into wheels."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / "README.md", src)
    shutil.copytree(ROOT / "qgm_ray", src / "qgm_ray", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    demo = tmp / "demo"
    (demo / DEMO).mkdir(parents=True)
    (demo / "pyproject.toml").write_text(DEMO_PYPROJECT)
    (demo / DEMO / "__init__.py").write_text("")
    for name in ("heavy_ball.py", "tiny_net.py", "blobs.py", "graphs.py"):
        shutil.copy(ROOT / "examples" / name, demo / DEMO / name)
    wheels = tmp / "wheels"
    for project in (src, demo):
        ok(run(sys.executable, "-m", "pip", "wheel", "--no-index", "--no-deps", "--no-build-isolation", "-q",
               "-w", wheels, project, cwd=tmp))
    [package] = wheels.glob("qgm_ray-*.whl")
    [plugin] = wheels.glob("qgm_demo_plugins-*.whl")
    return tmp, src, package, plugin


@pytest.fixture(scope="module")
def venv(built):
    """A new environment with the qgm-ray wheel and the demo distribution installed, and a
    directory far from any checkout to run them in."""
    tmp, _, package, plugin = built
    python = new_venv(tmp / "venv")
    pip(python, "install", "--ignore-installed", package, plugin, cwd=tmp)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tiny.yaml").write_text(TINY)
    return python, elsewhere


@pytest.fixture(scope="module")
def local_run(venv):
    """`qgm-ray` on the local engine, by the plug-in's short names, from `elsewhere`."""
    python, elsewhere = venv
    ok(run(python.parent / "qgm-ray", "--quiet", "--config", "tiny.yaml", "--set", "backend=local", "--output-dir",
           "local", cwd=elsewhere))
    return elsewhere / "local"


# ------------------------------------------------------------------ the package


def test_the_wheel_holds_the_package_its_command_and_nothing_else(built):
    _, _, package, _ = built
    names = zipfile.ZipFile(package).namelist()
    dist_info = f"qgm_ray-{qgm_ray.__version__}.dist-info"
    assert {n.split("/")[0] for n in names} == {"qgm_ray", dist_info}
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "qgm_ray").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == sources   # every module, no tests/ or examples/
    assert "qgm_ray/__main__.py" in sources
    entry_points = zipfile.ZipFile(package).read(f"{dist_info}/entry_points.txt").decode()
    assert "qgm-ray = qgm_ray.cli:main" in entry_points
    metadata = zipfile.ZipFile(package).read(f"{dist_info}/METADATA").decode()
    assert "Requires-Dist: torch" in metadata and "Provides-Extra: nlp" in metadata


def test_the_pinned_requirements_satisfy_the_package_ranges():
    """requirements*.txt pin the tested set; pyproject.toml's ranges must admit exactly those
    packages, so `make` (pins, then the package with --no-deps) installs what pip would accept."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def parse(lines):
        reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
        return {r.name.lower(): r for r in reqs}
    ranges = {"main": parse(project["dependencies"]), **{k: parse(v) for k, v in project["optional-dependencies"].items()}}
    pins = {"main": parse((ROOT / "requirements.txt").read_text().splitlines()),
            "nlp": parse((ROOT / "requirements-nlp.txt").read_text().splitlines())}
    # the test tools of the checkout, not of the library
    pins["test"] = {name: pins["main"].pop(name) for name in ("pytest", "pytest-xdist", "ruff")}
    for group, pinned in pins.items():
        assert set(pinned) == set(ranges[group]), group
        for name, pin in pinned.items():
            [spec] = pin.specifier
            assert spec.operator == "==", pin
            assert ranges[group][name].specifier.contains(spec.version), (pin, ranges[group][name])
            assert pin.extras == ranges[group][name].extras, name


@pytest.mark.slow
def test_installed_it_runs_from_any_directory_as_qgm_ray_and_python_m(venv, local_run):
    python, elsewhere = venv
    where = ok(run(python, "-c", "import qgm_ray; print(qgm_ray.__file__)", cwd=elsewhere)).strip()
    assert Path(where).is_relative_to(python.parent.parent) and not Path(where).is_relative_to(ROOT)
    qgm_ray_cmd = python.parent / "qgm-ray"
    # no --config: the built-in defaults, without the checkout's configs/default.yaml
    assert ok(run(qgm_ray_cmd, "config", cwd=elsewhere)) == ok(run(python, "-m", "qgm_ray", "config", cwd=elsewhere)) \
        == dump_yaml(qgm_ray.load_config(None))
    assert "usage: qgm-ray" in ok(run(qgm_ray_cmd, "--help", cwd=elsewhere))
    bench = run(qgm_ray_cmd, "bench", cwd=elsewhere)   # the harness is the checkout's, not the package's
    assert bench.returncode == 2 and "python main.py bench" in bench.stderr and len(bench.stderr.splitlines()) == 1
    assert len(rows(local_run)) == 2
    with open(local_run / "config.yaml") as f:   # the run names the code it ran
        assert f"name: {DEMO}.heavy_ball:HeavyBallDSGD" in f.read()
    again = run(qgm_ray_cmd, "--quiet", "--config", "tiny.yaml", "--output-dir", "local", cwd=elsewhere)
    assert again.returncode == 2 and "`qgm-ray --resume " in again.stderr   # what to type, as typed


@pytest.mark.slow
def test_installed_short_names_are_listed_and_stand_for_their_references(venv):
    python, elsewhere = venv
    keys = ok(run(python, "-m", "qgm_ray", "config", "--keys", "--set", "algorithm.name=demo_heavy_ball",
                  cwd=elsewhere))
    for key, name in (("algorithm.name", "demo_heavy_ball"), ("model.name", "demo_mlp"), ("data.name", "demo_blobs"),
                      ("topology.name", "demo_chords")):
        [line] = [x for x in keys.splitlines() if x.startswith(key + " ")]
        assert f", {name}, package.module:attr" in line
    assert "(null: demo_heavy_ball's default 0.9)" in keys   # the rule's defaults, found by its short name
    resolved = ok(run(python.parent / "qgm-ray", "config", "--config", "tiny.yaml", "--set", "topology.name=ring",
                      cwd=elsewhere))
    assert f"name: {DEMO}.tiny_net:tiny_mlp" in resolved and f"name: {DEMO}.blobs:blobs" in resolved
    assert "name: ring\n" in resolved   # a built-in name stays the built-in's
    # Installed code reaches every Ray process as installed code: nothing to ship.
    shipped = ok(run(python, "-c", "import qgm_ray; from qgm_ray.plugins import ship_paths; "
                     "print(ship_paths(qgm_ray.load_config('tiny.yaml')))", cwd=elsewhere))
    assert shipped.strip() == "[]"


@pytest.mark.ray
@pytest.mark.slow
def test_an_installed_plug_in_by_short_name_gives_the_same_numbers_on_both_engines(venv, local_run, tmp_path):
    python, elsewhere = venv
    ok(run(python.parent / "qgm-ray", "--quiet", "--config", "tiny.yaml", "--set", "backend=ray",
           "--output-dir", "ray", cwd=elsewhere, timeout=600))
    assert rows(elsewhere / "ray") == rows(local_run) and len(rows(local_run)) == 2
    # The same code named by reference from the checkout, and the built-in the rule restates
    # (examples/heavy_ball.py is dsgdm): the installed plug-in is what ran, and it is right.
    by_ref = tmp_path / "by_ref.yaml"
    by_ref.write_text(TINY.replace("demo_blobs", "examples.blobs:blobs").replace("demo_mlp", "examples.tiny_net:tiny_mlp")
                      .replace("demo_chords", "examples.graphs:ring_with_chords").replace("demo_heavy_ball", "dsgdm"))
    qgm_ray.run(by_ref, {"backend": "local"}, tmp_path / "dsgdm", log=None)
    assert rows(tmp_path / "dsgdm") == rows(local_run)


@pytest.mark.slow
def test_an_editable_install_imports_the_source_tree(built):
    tmp, src, _, _ = built
    python = new_venv(tmp / "editable")
    pip(python, "install", "--ignore-installed", "-e", src, cwd=tmp)
    where = ok(run(python, "-c", "import qgm_ray; print(qgm_ray.__file__)", cwd=tmp))
    assert Path(where.strip()) == src / "qgm_ray" / "__init__.py"
    assert ok(run(python, "-m", "qgm_ray", "config", "--set", "backend=local", cwd=tmp)).count("backend: local") == 1


@pytest.mark.parametrize("argv0,typed", [("/venv/bin/qgm-ray", "qgm-ray"), ("main.py", "python main.py"),
                                         ("/x/site-packages/qgm_ray/__main__.py", "python -m qgm_ray"),
                                         ("/x/site-packages/pytest/__main__.py", "python main.py"), ("", "python main.py")])
def test_messages_name_the_command_as_typed(argv0, typed, monkeypatch):
    from qgm_ray.command import command
    from qgm_ray.cli import build_parser
    monkeypatch.setattr(sys, "argv", [argv0])
    assert command() == typed
    assert build_parser().format_usage().startswith(f"usage: {typed} ")


# ------------------------------------------------------------------ entry points in this process


def distribution(root: Path, name: str, entry_points: dict) -> None:
    """An installed distribution as importlib.metadata reads it: a .dist-info directory."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{n} = {ref}\n" for n, ref in eps.items()) for group, eps in entry_points.items()))


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Distributions on sys.path naming examples/' plug-ins (importable here: pytest.ini puts
    the checkout on sys.path); plugins reads them afresh."""
    distribution(tmp_path, "byo-examples", {
        "qgm_ray.algorithms": {"hb": "examples.heavy_ball:HeavyBallDSGD", "clip": "examples.clip_rule:ClippedSGD"},
        "qgm_ray.models": {"tiny": "examples.tiny_net:tiny_mlp"},
        "qgm_ray.datasets": {"blobs": "examples.blobs:blobs", "mnist1d": "examples.blobs:blobs"},
        "qgm_ray.graphs": {"chords": "examples.graphs:ring_with_chords"},
        "qgm_ray.compressors": {"top": "qgm_ray.compression.sparse:TopK"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins.registry, "_INSTALLED", None)
    return tmp_path


def test_a_short_name_becomes_its_reference_in_the_config_and_its_grid(installed):
    cfg = qgm_ray.load_config(None, ["algorithm.name=clip", "algorithm.options={clip: 0.5}", "model.name=tiny",
                                     "data.name=blobs", "topology.name=chords", "tune.grid={algorithm.name: [hb, dsgdm]}"])
    assert (cfg.algorithm.name, cfg.model.name, cfg.data.name, cfg.topology.name) == (
        "examples.clip_rule:ClippedSGD", "examples.tiny_net:tiny_mlp", "examples.blobs:blobs",
        "examples.graphs:ring_with_chords")
    assert cfg.tune.grid == {"algorithm.name": ["examples.heavy_ball:HeavyBallDSGD", "dsgdm"]}
    # checked as the plug-in it is: its own knob, a dataset's options against its signature
    with pytest.raises(ConfigError, match=r"algorithm.options.clipp is not an option of "
                                          r"algorithm.name='examples.clip_rule:ClippedSGD'"):
        qgm_ray.load_config(None, ["algorithm.name=clip", "algorithm.options={clipp: 1}"])
    with pytest.raises(ConfigError, match=r"data.options.noise is not an option of data.name='examples.blobs:blobs'"):
        qgm_ray.load_config(None, ["data.name=blobs", "data.options={noise: 1}"])
    assert qgm_ray.load_config(None, ["data.name=mnist1d"]).data.name == "mnist1d"   # the built-in's name


def test_the_by_hand_api_takes_short_names(installed):
    assert qgm_ray.make_algorithm("hb").name == "examples.heavy_ball:HeavyBallDSGD"
    assert qgm_ray.make_model("tiny", (10,), 3, width=4)[1].out_features == 4
    assert len(qgm_ray.load_dataset("blobs", num_samples=100).train_y) == 80
    assert qgm_ray.make_topology("chords", 8).name == "examples.graphs:ring_with_chords"
    from qgm_ray.compression.registry import make_compressor
    assert make_compressor("top", keep=0.5).name == "qgm_ray.compression.sparse:TopK"
    assert plugins.installed_names("compressor") == ("top",) and "top" in plugins.names("compressor")


def test_unknown_and_ambiguous_short_names_are_one_config_line(installed):
    with pytest.raises(ConfigError, match=r"^algorithm.name='nope' is unknown; choose one of dsgd, .*, clip, hb, "
                                          r"or a reference"):
        qgm_ray.load_config(None, ["algorithm.name=nope"])
    distribution(installed, "other-plugins", {"qgm_ray.models": {"tiny": "other.nets:tiny"}})
    plugins.registry._INSTALLED = None   # monkeypatch restores the value it replaced
    with pytest.raises(ConfigError, match=r"^model.name='tiny' is an entry point of several installed distributions: "
                                          r"byo-examples \(examples.tiny_net:tiny_mlp\), other-plugins "
                                          r"\(other.nets:tiny\); name the one you mean by its reference"):
        qgm_ray.load_config(None, ["model.name=tiny"])


def test_built_in_names_read_no_entry_points(monkeypatch):
    def never():
        raise AssertionError("entry points read for a built-in name")
    monkeypatch.setattr(plugins.registry, "_installed", never)
    for overrides in ([], ["algorithm.name=dadam", "model.name=resnet20", "data.name=cifar10", "topology.name=torus"],
                      ["tune.grid={algorithm.name: [dsgdm, qg_dsgdm]}"], ["algorithm.name=examples.clip_rule:ClippedSGD"]):
        qgm_ray.load_config(None, overrides)
