"""qgm_ray/ray_private.py: the one module that names Ray's private API, for the Ray it was
written for."""
import logging
import re
from pathlib import Path

import pytest

from qgm_ray import ray_private

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_ray_is_the_one_the_private_names_were_written_for():
    ray = pytest.importorskip("ray")
    assert ray.__version__ == ray_private.WRITTEN_FOR == "2.60.0"
    pins = re.findall(r"^ray\[[^\]]*\]==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pins == [ray_private.WRITTEN_FOR]


@pytest.mark.parametrize("name", ray_private.NAMES + ray_private.ATTRIBUTES)
def test_every_private_name_resolves_in_that_ray(name):
    pytest.importorskip("ray")
    assert name.startswith("ray._private.")
    module, _, attr = name.partition(":")
    found = ray_private.get(name)
    if attr:
        assert found is getattr(ray_private.module_of(name), attr)
    else:
        assert found.__name__ == module


def test_no_other_module_names_rays_private_api():
    users = sorted(str(p.relative_to(ROOT)) for top in ("qgm_ray", "bench") for p in (ROOT / top).rglob("*.py")
                   if "ray._private" in p.read_text() or "from ray import _private" in p.read_text())
    assert users == ["qgm_ray/ray_private.py"]


def test_a_moved_name_is_one_line_naming_both_rays():
    pytest.importorskip("ray")
    import ray
    with pytest.raises(ray_private.PrivateAPIMoved) as e:
        ray_private.get("ray._private.worker:no_such_name")
    message = str(e.value)
    assert "\n" not in message
    assert message == (f"Ray's private ray._private.worker.no_such_name is not in the installed Ray "
                       f"({ray.__version__}); qgm-ray was written for Ray 2.60.0 (requirements.txt pins it)")
    with pytest.raises(ray_private.PrivateAPIMoved, match="ray._private.no_such_module is not in"):
        ray_private.get("ray._private.no_such_module")


def test_an_optional_name_that_moved_is_none_and_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(ray_private, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="qgm_ray.ray_private"):
        assert ray_private.optional("ray._private.no_such_module:f") is None
        assert ray_private.optional("ray._private.no_such_module:f") is None
    assert [r.getMessage() for r in caplog.records] == [
        ray_private.moved("ray._private.no_such_module:f") + "; going on without it"]


def test_importing_the_module_imports_no_ray():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, qgm_ray.ray_private, qgm_ray.plugins; "
                          "print('ray' in sys.modules)"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
