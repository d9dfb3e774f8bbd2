"""Plug-ins that break their contract (qgm_ray/contracts/): a rule, a model or a dataset that
returns the wrong thing is one line naming it, what it returned and what was expected. Checked
on a tiny batch before the run starts (nothing written, no actor started) where that is
possible, else at the round it happens; on Ray the driver prints the same line as the local
engine. The checks change no number of a valid run."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qgm_ray
from qgm_ray import contracts
from qgm_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

BYO = ROOT / "examples" / "byo.yaml"
PKG = "contract_plugs"

PLUGS = '''
import numpy as np, torch
from torch import nn
import qgm_ray
from examples.blobs import blobs
from examples.clip_rule import ClippedSGD


class NoPreMix(qgm_ray.Algorithm):
    def post_mix(self, state, params, mixed, lr):
        qgm_ray.finish_round(state)
        return mixed.clone()

class NoPostMix(ClippedSGD):
    post_mix = qgm_ray.Algorithm.post_mix

class ShortPayload(ClippedSGD):
    def pre_mix(self, state, params, grad, lr):
        return super().pre_mix(state, params, grad, lr)[:, :-1]

class ListPayload(ClippedSGD):
    def pre_mix(self, state, params, grad, lr):
        return super().pre_mix(state, params, grad, lr).tolist()

class NoneParams(ClippedSGD):
    def post_mix(self, state, params, mixed, lr):
        qgm_ray.finish_round(state)

class OneRow(ClippedSGD):
    def post_mix(self, state, params, mixed, lr):
        qgm_ray.finish_round(state)
        return mixed[0].clone()

class IntPayload(ClippedSGD):
    def pre_mix(self, state, params, grad, lr):
        return super().pre_mix(state, params, grad, lr).long()

class NaNPayload(ClippedSGD):
    def pre_mix(self, state, params, grad, lr):
        return super().pre_mix(state, params, grad, lr) * float("nan")

class RaisesAtOnce(ClippedSGD):
    def pre_mix(self, state, params, grad, lr):
        raise RuntimeError("no payload today")

class RaisesLater(ClippedSGD):
    def pre_mix(self, state, params, grad, lr):
        if int(state["step"].max()) >= 3:
            raise RuntimeError("boom at step 3")
        return super().pre_mix(state, params, grad, lr)

class ShrinksLater(ClippedSGD):
    def post_mix(self, state, params, mixed, lr):
        out = super().post_mix(state, params, mixed, lr)
        return out.double() if int(state["step"].max()) >= 3 else out

class Noisy(ClippedSGD):
    # draws from the global generators: the checks must leave them as they found them
    def pre_mix(self, state, params, grad, lr):
        noise = 1e-3 * torch.randn(params.shape) + 1e-3 * float(np.random.normal())
        return super().pre_mix(state, params, grad, lr) + noise.to(params.dtype)


def fails_forward(input_shape, num_classes):
    return nn.Linear(input_shape[0] + 1, num_classes)

def no_params(input_shape, num_classes):
    return nn.Flatten()

def float64(input_shape, num_classes):
    return nn.Linear(input_shape[0], num_classes).double()

class _Squeeze(nn.Module):
    def __init__(self, i, c):
        super().__init__()
        self.lin = nn.Linear(i, c)
    def forward(self, x):
        return self.lin(x)[:, 0]

def squeezes(input_shape, num_classes):
    return _Squeeze(input_shape[0], num_classes)

def in_actors_only(input_shape, num_classes):
    # a model that builds on the driver and breaks inside a Ray actor
    import ray
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return "not a model"
    return nn.Linear(input_shape[0], num_classes)


def raises_building(input_shape, num_classes):
    raise RuntimeError("no layers today" + chr(10) + "a second line")


def string_labels(seed):
    a, b, c, d = blobs(seed)
    return a, b.astype(str), c, d.astype(str)

def int_features(seed):
    a, b, c, d = blobs(seed)
    return (a * 10).astype(np.int64), b, (c * 10).astype(np.int64), d

def object_features(seed):
    a, b, c, d = blobs(seed)
    return a.astype(object), b, c.astype(object), d

def huge(seed):
    # a view of one number: nothing is allocated until qgm-ray would copy it
    x = np.broadcast_to(np.float32(0), (10**12, 10))
    return x, np.broadcast_to(np.int64(0), (10**12,)), np.zeros((10, 10), np.float32), np.zeros(10, np.int64)

def nan_features(seed):
    a, b, c, d = blobs(seed)
    a = a.copy()
    a[5, 3] = np.nan
    return a, b, c, d
'''


@pytest.fixture(scope="module")
def plugs(tmp_path_factory):
    """The package of broken plug-ins, importable from this process and its children."""
    root = tmp_path_factory.mktemp("plugs")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text("")
    (root / PKG / "user.py").write_text(PLUGS)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def ref(attr: str) -> str:
    return f"{PKG}.user:{attr}"


def main_py(root, *args, timeout=300, env=None):
    """main.py with the plug-ins' package on its path (env: variables added to this process's)."""
    env = {**__import__("os").environ, "PYTHONPATH": f"{root}:{ROOT}", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def rows(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("wall_seconds", "time")} for r in csv.DictReader(f)]


# ------------------------------------------------------------------ before the run starts

RULE = "algorithm.name"
BEFORE = [
    (RULE, "qgm_ray:Algorithm", r"algorithm.name='qgm_ray:Algorithm' does not implement pre_mix; a subclass"),
    (RULE, ref("NoPreMix"), r"does not implement pre_mix"),
    (RULE, ref("NoPostMix"), r"does not implement post_mix"),
    (RULE, ref("ShortPayload"), r"pre_mix returned a tensor of shape \(2, 226\); expected a \(2, 227\) float32 tensor"),
    (RULE, ref("ListPayload"), r"pre_mix returned a list of 2; expected a \(2, 227\) float32 tensor"),
    (RULE, ref("NoneParams"), r"post_mix returned None; expected a \(2, 227\) float32 tensor \(P floats per client"),
    (RULE, ref("OneRow"), r"post_mix returned a tensor of shape \(227,\); expected a \(2, 227\)"),
    (RULE, ref("IntPayload"), r"pre_mix returned int64 values; expected .* float32 .*integers would truncate every weight"),
    (RULE, ref("NaNPayload"), r"pre_mix returned 454 non-finite value\(s\) \(NaN or inf\) from finite parameters"),
    (RULE, ref("RaisesAtOnce"), r"pre_mix raised RuntimeError: no payload today"),
    ("model.name", ref("fails_forward"), r"its first forward, on a batch of shape \(2, 10\), raised RuntimeError: mat1"),
    ("model.name", ref("no_params"), r"built a Flatten with no parameters; expected a torch.nn.Module with trainable"),
    ("model.name", ref("float64"), r"parameter 'weight' is float64; expected float32 parameters"),
    ("model.name", ref("squeezes"), r"forward on a batch of 2 returned shape \(2,\); expected \(2, 3\)"),
    ("data.name", ref("string_labels"), r"train_y holds strings \(numpy dtype <U\d+\); expected a numeric array"),
    ("data.name", ref("int_features"), r"gives int64 features and model.name='examples.tiny_net:tiny_mlp' failed on them "
                                       r"\(RuntimeError: .*\); expected float features"),
    ("data.name", ref("object_features"), r"train_x holds Python objects \(numpy dtype object\)"),
    ("data.name", ref("huge"), r"train_x of shape \(1000000000000, 10\) takes 36.4 TiB, more than this machine's"),
    ("data.name", ref("nan_features"), r"train_x holds NaN or infinite features in 1 row\(s\) \(the first is row 5\); "
                                       r"expected finite numbers"),
]


@pytest.mark.parametrize("key,name,message", BEFORE, ids=[n.split(":")[-1] for _, n, _ in BEFORE])
def test_a_broken_plug_in_is_one_line_naming_it_before_anything_is_written(plugs, tmp_path, key, name, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message) as e:
        qgm_ray.run(BYO, ["progress=false", f"{key}={name}"], out, log=None)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{key}={name!r}")
    assert not out.exists()


def test_main_py_exits_2_with_the_line_and_writes_nothing(plugs, tmp_path):
    for key, name in ((RULE, ref("IntPayload")), ("data.name", ref("nan_features"))):
        out = tmp_path / name.split(":")[-1]
        p = main_py(plugs, "--quiet", "--config", str(BYO), "--output-dir", str(out), "--set", f"{key}={name}")
        assert p.returncode == 2, p.stderr[-3000:]
        assert one_line(p.stderr).startswith(f"config error: {key}={name!r}: ")
        assert not out.exists()


# ------------------------------------------------------------------ during the run


@pytest.mark.parametrize("name,message", [
    ("RaisesLater", r"pre_mix raised RuntimeError: boom at step 3$"),
    ("ShrinksLater", r"post_mix returned float64 values; expected a \(\d+, 227\) float32 tensor \(P floats"),
])
def test_a_rule_that_breaks_its_contract_mid_run_stops_there_with_one_line(plugs, tmp_path, name, message):
    out = tmp_path / "run"
    with pytest.raises(contracts.ContractError, match=message) as e:
        qgm_ray.run(BYO, ["progress=false", f"algorithm.name={ref(name)}"], out, log=None)
    assert "\n" not in str(e.value)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["message"].endswith(str(e.value))


def test_main_py_mid_run_exits_2_with_one_line(plugs, tmp_path):
    p = main_py(plugs, "--quiet", "--config", str(BYO), "--output-dir", str(tmp_path / "run"),
                "--set", f"algorithm.name={ref('RaisesLater')}")
    assert p.returncode == 2, p.stderr[-3000:]
    assert one_line(p.stderr) == f"config error: algorithm.name={ref('RaisesLater')!r}: pre_mix raised RuntimeError: boom at step 3"


def test_a_plug_in_model_that_raises_while_built_is_its_keys_line_in_any_process(plugs):
    """What an actor building its block meets too (no `prepare` wraps it there)."""
    from qgm_ray.models import make_model
    with pytest.raises(ConfigError) as e:
        make_model(ref("raises_building"), (10,), 3, seed=0)
    assert str(e.value) == (f"model.name={ref('raises_building')!r} with model.options={{}}: "
                            f"RuntimeError: no layers today")
    assert str(contracts.crossing_ray(e.value)) == str(e.value)


def test_rule_result_is_checked_on_metadata_only():
    class Rule:
        name = "pkg.mod:Rule"
    ok = torch.zeros(3, 5)
    assert contracts.rule_result(Rule(), "pre_mix", ok, 3, 5, torch.float32) is ok
    for bad in (ok[:, :4], ok[0], ok.double(), ok.long(), ok.tolist(), None):
        with pytest.raises(contracts.ContractError, match=r"algorithm.name='pkg.mod:Rule': pre_mix returned "):
            contracts.rule_result(Rule(), "pre_mix", bad, 3, 5, torch.float32)


def test_a_built_in_rules_own_error_keeps_its_traceback():
    class Rule:
        name = "dsgd"

        def pre_mix(self):
            raise RuntimeError("a bug of qgm-ray")
    with pytest.raises(RuntimeError, match="a bug of qgm-ray"):
        contracts.call_rule(Rule(), "pre_mix")


# ------------------------------------------------------------------ a valid run is untouched


def test_the_checks_change_no_number_of_a_valid_run_nor_the_global_generators(plugs, tmp_path, monkeypatch):
    """A rule drawing from the global torch and numpy generators, with the checks and without
    them: the same metrics, every column. (Without the generators restored, the checks' draws
    shift every draw of the run.)"""
    overrides = ["progress=false", f"algorithm.name={ref('Noisy')}"]

    def train(out):
        torch.manual_seed(1234)
        np.random.seed(1234)
        qgm_ray.run(BYO, overrides, out, log=None)
        return rows(out)

    checked = train(tmp_path / "checked")
    tried = []
    monkeypatch.setattr(contracts, "check_plugins", lambda cfg, ds: tried.append(cfg.algorithm.name))
    unchecked = train(tmp_path / "unchecked")
    assert tried == [ref("Noisy")]   # the second run really went without the checks
    assert checked == unchecked and len(checked) == 4


# ------------------------------------------------------------------ on Ray


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("key,name,line", [
    (RULE, ref("RaisesLater"), ": pre_mix raised RuntimeError: boom at step 3"),
    ("model.name", ref("in_actors_only"), " returned a str; expected a torch.nn.Module"),
])
def test_on_ray_the_driver_prints_the_plug_ins_line_and_exits_2(ray_session, plugs, tmp_path, key, name, line):
    """The driver joins the test session's Ray: its workers have not the plug-ins' package on
    their path, so the run ships it, as on a cluster."""
    import ray
    p = main_py(plugs, "--quiet", "--config", str(BYO), "--output-dir", str(tmp_path / "run"),
                "--set", f"{key}={name}", "--set", "backend=ray", timeout=400,
                env={"RAY_ADDRESS": ray.get_runtime_context().gcs_address})
    assert p.returncode == 2, p.stderr[-3000:]
    assert one_line(p.stderr) == f"config error: {key}={name!r}{line}"
