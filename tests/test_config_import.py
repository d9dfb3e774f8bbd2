"""Loading and validating a config loads neither torch nor Ray nor networkx (a plug-in
reference aside, which must be imported): `qgm_ray.load_config` is quick."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, resource, sys, time
start = time.process_time()
import qgm_ray
cfg = qgm_ray.load_config({config})
print(json.dumps({{"heavy": [m for m in ("torch", "ray", "networkx") if m in sys.modules],
                   "cpu_seconds": time.process_time() - start}}))
"""


def probe(config: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(config=config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_load_config_imports_no_torch_ray_or_networkx():
    got = probe("None")
    assert got["heavy"] == []
    # CPU time, not wall time: the machine may be shared; torch alone takes several seconds.
    assert got["cpu_seconds"] < 1.0


@pytest.mark.parametrize("config", ["'configs/default.yaml'", "None, ['topology.name=social', 'topology.n_clients=32']",
                                    "None, ['algorithm.name=dadam', 'data.name=cifar10', 'model.name=resnet20']",
                                    "None, ['topology.name=one_peer_exponential', 'algorithm.name=dsgdm_n']",
                                    "None, ['algorithm.name=dsgdm_n', 'algorithm.slowmo_tau=2']"])
def test_built_in_names_validate_without_heavy_imports(config):
    assert probe(config)["heavy"] == []
