"""Bring your own method: a rule, a model, a dataset and a graph written outside qgm_ray/
(examples/) get what the built-ins get. The Python API, the one registry, the checks that
turn a bad reference into one config line, both engines bit for bit, resume after SIGTERM,
replay after a killed actor, elastic joiners, Tune grids over a plug-in's own knob, code
shipped to Ray workers that cannot import it themselves."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import main_py, quiet

import qgm_ray
from qgm_ray.runner import run as runner
from qgm_ray.errors import ConfigError
from test_main import start_and_signal  # one way to signal a running main.py

ROOT = Path(__file__).resolve().parent.parent

BYO = ROOT / "examples" / "byo.yaml"
SAME = ("round", "train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance", "bytes_sent",
        "n_clients", "test_loss")


def rows(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: r[k] for k in SAME} for r in csv.DictReader(f)]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------ the Python API


def test_import_is_cheap_and_every_public_name_resolves():
    code = ("import sys, qgm_ray; assert 'torch' not in sys.modules and 'ray' not in sys.modules; "
            "[getattr(qgm_ray, n) for n in qgm_ray.__all__]; print(len(qgm_ray.__all__))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for name in ("load_config", "run", "sweep", "Algorithm", "finish_round", "rows_where", "with_weight_decay"):
        assert name in qgm_ray.__all__
    with pytest.raises(AttributeError):
        _ = qgm_ray.no_such_name


def test_load_config_takes_a_path_a_dict_a_config_and_overrides():
    from_file = qgm_ray.load_config(BYO, ["algorithm.options.clip=0.25"])
    assert from_file.algorithm.options == {"clip": 0.25} and from_file.model.options == {"width": 16}
    from_dict = qgm_ray.load_config({"data": {"alpha": 0.5}, "topology.n_clients": 6}, {"seed": 3})
    assert (from_dict.data.alpha, from_dict.topology.n_clients, from_dict.seed) == (0.5, 6, 3)
    assert from_dict.data.name == "mnist1d"   # merged over the built-in defaults
    again = qgm_ray.load_config(from_file, "seed=7")
    assert again.seed == 7 and again.algorithm.options == {"clip": 0.25} and from_file.seed == 0
    with pytest.raises(ConfigError, match="data.alhpa"):
        qgm_ray.load_config({"data": {"alhpa": 1}})


def test_run_returns_summary_history_and_run_dir_like_main_py(tmp_path):
    result = qgm_ray.run(BYO, ["progress=false"], output_dir=tmp_path / "api", log=None)
    assert result.status == "completed" and result.run_dir == tmp_path / "api"
    assert list(result.history["round"]) == [4, 8, 12, 16] and result.history["test_accuracy"].iloc[-1] > 0.5
    assert result.final_test_accuracy == result.history["test_accuracy"].iloc[-1]
    cli = main_py("--config", str(BYO), "--output-dir", str(tmp_path / "cli"), "--quiet")
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert rows(tmp_path / "api") == rows(tmp_path / "cli")
    back = qgm_ray.load_run(tmp_path / "cli")
    assert back.summary["algorithm"] == "examples.clip_rule:ClippedSGD" and back.history.equals(result.history.assign(
        wall_seconds=back.history["wall_seconds"]))


# ------------------------------------------------------------------ rules and their knobs


def test_a_rule_reads_its_own_knob_and_the_shared_ones():
    cfg = qgm_ray.load_config(BYO, ["algorithm.options.clip=0.5", "algorithm.momentum=0.8"])
    from qgm_ray.build import build_algorithm
    rule = build_algorithm(cfg)
    assert type(rule).__name__ == "ClippedSGD" and rule.push_sum and not rule.centralized
    assert rule.hparams == {"weight_decay": 1e-4, "momentum": 0.8, "clip": 0.5}
    assert qgm_ray.make_algorithm("examples.clip_rule:ClippedSGD").hparams["clip"] == 1.0   # its default
    # the knob changes the numbers: a tiny clip barely moves the parameters
    import torch
    x, g = torch.zeros(3, 5), torch.full((3, 5), 10.0)
    small = qgm_ray.make_algorithm("examples.clip_rule:ClippedSGD", clip=0.01, weight_decay=0.0)
    big = qgm_ray.make_algorithm("examples.clip_rule:ClippedSGD", clip=100.0, weight_decay=0.0)
    assert small.pre_mix(small.init(x), x, g, 1.0).norm(dim=-1).max() < 0.011
    assert torch.allclose(big.pre_mix(big.init(x), x, g, 1.0), -g)


def test_built_in_rules_declare_their_knobs_the_same_way():
    from qgm_ray.algorithms import algorithm_class, base, own_options
    assert not hasattr(base, "DEFAULTS") and not hasattr(base, "VALIDATORS")
    assert algorithm_class("qg_dsgdm_n").knobs() == {"weight_decay": 1e-4, "momentum": 0.9, "qgm_beta": 0.9}
    assert algorithm_class("qg_adam_v2").knobs()["normalization_eps"] == 1e-8
    assert own_options("qg_dsgdm_n") == {} and own_options("examples.clip_rule:ClippedSGD") == {"clip": 1.0}


BAD_OPTIONS = [
    (["algorithm.options.clip=big"], r"algorithm.options.clip must be a number \(the type of its default 1.0\), got 'big'"),
    (["algorithm.options.clip=-1"], r"algorithm.options.clip must be > 0"),
    (["algorithm.options.clipp=1"], r"algorithm.options.clipp is not an option of algorithm.name='examples.clip_rule:ClippedSGD' \(its options: clip\)"),
    (["algorithm.options.momentum=0.5"], r"algorithm.options.momentum: momentum is a key every rule shares; set it with algorithm.momentum"),
    (["algorithm.name=dsgdm", "algorithm.options={clip: 1}"], r"algorithm.options.clip is not an option of algorithm.name='dsgdm' \(it has no options of its own\)"),
    (["algorithm.name=examples.nope:Rule"], r"algorithm.name='examples.nope:Rule': no module named 'examples.nope'"),
    (["algorithm.name=examples.clip_rule:Nope"], r"module 'examples.clip_rule' has no attribute 'Nope'"),
    (["algorithm.name=examples.blobs:blobs"], r"algorithm.name='examples.blobs:blobs' is a function, not a subclass of qgm_ray.Algorithm"),
    (["algorithm.name=examples.clip_rule"], r"algorithm.name='examples.clip_rule' is unknown; choose one of dsgd"),
    (["algorithm.name=:ClippedSGD"], r"algorithm.name=.:ClippedSGD. is not a reference of the form 'package.module:attr'"),
    (["model.options.depth=3"], r"model.options.depth is not an option of model.name='examples.tiny_net:tiny_mlp' \(allowed: width\)"),
    (["data.options.noise=3"], r"data.options.noise is not an option of data.name='examples.blobs:blobs'"),
    (["topology.options.hops=3"], r"topology.options.hops is not an option of topology.name='examples.graphs:ring_with_chords' \(allowed: every, directed, lazy\)"),
    (["model.name=examples.tiny_net:math"], r"model.name='examples.tiny_net:math' is a module, not a function or class"),
    (["topology.name=examples.graphs:one_way_ring", "algorithm.name=d2"], r"algorithm.name=d2 cannot run on topology.name=examples.graphs:one_way_ring \(a directed graph"),
    (["topology.name=examples.graphs:lazy_ring", "topology.options={keep: 1.5}"], r"topology.name='examples.graphs:lazy_ring' returned an array of shape \(8, 8\); expected an 8 x 8 W of finite non-negative"),
    (["topology.name=examples.graphs:lazy_ring", "topology.options={directed: 1}"], r"topology.options.directed=1 must be true or false"),
    (["topology.options.seed=3"], r"topology.options.seed is not an option: a graph's randomness follows the run's `seed`"),
    (["tune.grid={algorithm.options.clip: [1.0, fast]}"], None),   # valid as a config; check_trials refuses it
]


@pytest.mark.parametrize("overrides,message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_plug_in_input_is_one_line_naming_the_key(overrides, message):
    if message is None:
        cfg = qgm_ray.load_config(BYO, overrides)
        from qgm_ray import tune as qtune
        with pytest.raises(ConfigError, match=r"trial clip=fast: algorithm.options.clip must be a number") as e:
            qtune.check_trials(cfg.to_dict(), cfg.tune, log=quiet)
    else:
        with pytest.raises(ConfigError, match=message) as e:
            qgm_ray.load_config(BYO, overrides)
    assert "\n" not in str(e.value)


def write_module(tmp_path, name, source):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "user.py").write_text(source)
    return pkg


BAD_OBJECTS = '''
import numpy as np, torch, networkx as nx
import qgm_ray

def not_a_model(input_shape, num_classes):
    return "a model"

def three_arrays(seed):
    return np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros((4, 2))

def float_labels(seed):
    return np.zeros((4, 2)), np.zeros(4), np.zeros((4, 2)), np.zeros(4, dtype=int)

def a_list(n):
    return [[1.0]]

def columns_only(n):
    return np.full((n, n), 1.0 / n) * np.arange(1, n + 1)[:, None] / ((n + 1) / 2)

def two_islands(n):
    return nx.disjoint_union(nx.complete_graph(n // 2), nx.complete_graph(n - n // 2))

def crashes(n):
    raise RuntimeError("no graph today")

class NoKnobType(qgm_ray.Algorithm):
    defaults = {"lr": 0.1}

class ScalarState(qgm_ray.Algorithm):
    def init(self, params):
        return {"step": qgm_ray.new_step_counter(params), "count": torch.tensor(0)}

class NoStep(qgm_ray.Algorithm):
    def init(self, params):
        return {"m": torch.zeros_like(params)}
'''


@pytest.mark.parametrize("overrides,message", [
    (["data.name=bad_user_mod.user:three_arrays"], r"data.name='bad_user_mod.user:three_arrays' returned a tuple of 3; expected a tuple \(train_x, train_y, test_x, test_y\)"),
    (["data.name=bad_user_mod.user:float_labels"], r"train_y holds torch.float64 values; labels must be integers"),
    (["model.name=bad_user_mod.user:not_a_model"], r"model.name='bad_user_mod.user:not_a_model' returned a str; expected a torch.nn.Module"),
    (["topology.name=bad_user_mod.user:a_list"], r"returned a list; expected a networkx Graph or DiGraph, or an n x n numpy array W"),
    (["topology.name=bad_user_mod.user:columns_only"], r"returned a W that is not doubly stochastic"),
    (["topology.name=bad_user_mod.user:two_islands"], r"returned a disconnected graph on 8 nodes \(2 components\)"),
    (["topology.name=bad_user_mod.user:crashes"], r"topology.name='bad_user_mod.user:crashes' with n=8: RuntimeError: no graph today"),
    (["algorithm.name=bad_user_mod.user:NoKnobType"], r"rule NoKnobType declares 'lr' in `defaults`"),
    (["algorithm.name=bad_user_mod.user:ScalarState"], r"init\(params\) state\['count'\] is \(\); every entry must be a tensor with one row per client"),
    (["algorithm.name=bad_user_mod.user:NoStep"], r"init\(params\) must return a dict of tensors holding 'step'"),
])
def test_a_reference_to_the_wrong_kind_of_object_is_one_line_before_anything_is_written(
        tmp_path, monkeypatch, overrides, message):
    write_module(tmp_path, "bad_user_mod", BAD_OBJECTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=message) as e:
        cfg = qgm_ray.load_config(BYO, overrides)
        runner.prepare(cfg, log=quiet)
    assert "\n" not in str(e.value)


def test_main_py_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    p = main_py("--config", str(BYO), "--output-dir", str(out), "--set", "model.name=examples.tiny_net:wide_mlp")
    assert p.returncode == 2 and "model.name='examples.tiny_net:wide_mlp'" in one_line(p.stderr)
    assert not out.exists()


# ------------------------------------------------------------------ models, data, graphs


def test_plug_in_graphs_of_each_kind():
    from qgm_ray.topology import make_topology, mixing_matrix_from_graph
    import networkx as nx

    chords = make_topology("examples.graphs:ring_with_chords", 8, every=4)
    G = nx.cycle_graph(8)
    G.add_edges_from([(0, 4), (4, 0)])
    assert np.array_equal(chords.matrix(0), mixing_matrix_from_graph(G)) and not chords.directed
    ring = make_topology("examples.graphs:one_way_ring", 5)
    W = ring.matrix(0)
    assert ring.directed and np.allclose(W.sum(axis=0), 1) and W[1, 0] == 0.5 and W[0, 1] == 0
    lazy = make_topology("examples.graphs:lazy_ring", 6, keep=0.25)
    from examples.graphs import lazy_ring
    assert np.array_equal(lazy.matrix(0), lazy_ring(6, 0.25)) and not lazy.directed
    # a column- (not row-) stochastic W with directed: true is push-sum; without it, refused.
    # Client 0 sends to 1 and 2, both send back to 0 only.
    col = np.array([[1 / 3, 1 / 2, 1 / 2], [1 / 3, 1 / 2, 0], [1 / 3, 0, 1 / 2]])
    import types
    sys.modules["qgm_test_w"] = types.SimpleNamespace(w=lambda n: col)
    try:
        assert make_topology("qgm_test_w:w", 3, directed=True).directed
        assert np.array_equal(make_topology("qgm_test_w:w", 3, directed=True).matrix(0), col)
        with pytest.raises(ConfigError, match="not doubly stochastic"):
            make_topology("qgm_test_w:w", 3)
    finally:
        del sys.modules["qgm_test_w"]


def test_plug_in_data_is_partitioned_batched_and_evaluated_like_a_built_in(tmp_path):
    from qgm_ray.build import build_dataset
    cfg = qgm_ray.load_config(BYO, ["data.options.num_classes=4"])
    ds = build_dataset(cfg)
    assert ds.num_classes == 4 and ds.input_shape == (10,) and ds.train_x.dtype.is_floating_point
    assert ds.train_y.dtype == ds.test_y.dtype and str(ds.train_y.dtype) == "torch.int64"
    _, parts = runner.prepare(cfg, log=quiet)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ds.train_y)))   # every sample, once
    model = qgm_ray.make_model("examples.tiny_net:tiny_mlp", ds.input_shape, ds.num_classes, seed=0, width=8)
    again = qgm_ray.make_model("examples.tiny_net:tiny_mlp", ds.input_shape, ds.num_classes, seed=0, width=8)
    assert all((a == b).all() for a, b in zip(model.parameters(), again.parameters()))   # seeded


def test_plug_in_heavy_ball_gives_exactly_the_built_in_dsgdm_numbers(tmp_path):
    common = ["progress=false", "algorithm.momentum=0.8", "algorithm.weight_decay=5e-4",
              "topology.name=examples.graphs:one_way_ring"]   # push-sum too: both declare push_sum
    built_in = qgm_ray.run(BYO, common + ["algorithm.name=dsgdm"], tmp_path / "dsgdm", log=None)
    plug_in = qgm_ray.run(BYO, common + ["algorithm.name=examples.heavy_ball:HeavyBallDSGD"], tmp_path / "hb",
                          log=None)
    assert rows(tmp_path / "dsgdm") == rows(tmp_path / "hb") and len(rows(tmp_path / "hb")) == 4
    other = qgm_ray.run(BYO, common + ["algorithm.name=dsgdm_n"], tmp_path / "dsgdm_n", log=None)
    assert rows(tmp_path / "dsgdm_n") != rows(tmp_path / "hb")   # the comparison can tell rules apart
    assert built_in.summary["final_test_accuracy"] == plug_in.summary["final_test_accuracy"]
    assert other.status == "completed"


# ------------------------------------------------------------------ resume


@pytest.mark.slow
def test_sigterm_then_resume_gives_the_uninterrupted_runs_metrics(tmp_path):
    cfg = tmp_path / "byo.yaml"
    cfg.write_text(BYO.read_text().replace("epochs: 2", "epochs: 60").replace("every_epochs: 0.5", "every_epochs: 5")
                   + "fault_tolerance: {checkpoint_every: 40}\n")
    out = tmp_path / "run"
    code, _, stderr = start_and_signal(cfg, out, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and 0 < summary["rounds"] < 480
    shutil.copytree(out, tmp_path / "api")
    res = main_py("--resume", str(out), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    api = qgm_ray.run(None, output_dir=tmp_path / "api", resume=True, log=None, progress=False)
    assert api.status == "completed"
    full = qgm_ray.run(cfg, ["progress=false"], tmp_path / "full", log=None)
    assert rows(out) == rows(full.run_dir) == rows(api.run_dir) and len(rows(out)) == 12


# ------------------------------------------------------------------ on Ray


@pytest.fixture(scope="module")
def local_byo(tmp_path_factory):
    d = tmp_path_factory.mktemp("byo") / "local"
    qgm_ray.run(BYO, ["progress=false", *ELASTIC], d, log=None)
    return rows(d)


# 8 -> 10 clients at epoch 1: two joiners get the plug-in rule's state, model and data shards.
ELASTIC = ["elastic.schedule=[[1.0, 10]]", "ray.cpus_per_client=0.125", "fault_tolerance.checkpoint_every=5", "fault_tolerance.keep=4"]


@pytest.mark.ray
@pytest.mark.slow
def test_on_ray_plug_ins_give_the_local_numbers_and_a_killed_actor_is_replayed(ray_session, local_byo, tmp_path,
                                                                              monkeypatch):
    import ray
    assert [int(r["n_clients"]) for r in local_byo] == [8, 8, 10, 10]   # the resize follows the evaluation of round 8
    engines = []
    make = runner.make_engine
    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: engines.append(make(*a, **k)) or engines[-1])
    fired = []

    def on_eval(row):   # after the first evaluation, kill an actor while the next rounds run
        if not fired:
            fired.append(row["round"])
            threading.Timer(0.02, lambda: ray.kill(engines[0].actor_handles()[1])).start()
    logs = []
    s = qgm_ray.run(BYO, ["backend=ray", "progress=false", "ray.clients_per_actor=3", *ELASTIC], tmp_path / "ray",
                    on_eval=on_eval, log=logs.append).summary
    assert s["status"] == "completed" and engines[0].recoveries >= 1, (s, logs)
    assert rows(tmp_path / "ray") == local_byo   # bit for bit, through a replay and a grow


@pytest.mark.ray
@pytest.mark.slow
def test_main_py_on_ray_matches_the_local_engine(ray_session, local_byo, tmp_path):
    """A real `python main.py` driver, on the test session's Ray."""
    import ray
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    p = main_py("--config", str(BYO), "--output-dir", str(tmp_path / "ray"), "--quiet", "--set", "backend=ray",
                *[f"--set={o}" for o in ELASTIC], env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert rows(tmp_path / "ray") == local_byo


@pytest.mark.ray
@pytest.mark.slow
def test_code_the_workers_cannot_import_is_shipped_to_them(ray_session, tmp_path, monkeypatch):
    """The plug-ins copied into a package that only this process has on its sys.path (not the
    working directory, not PYTHONPATH): Ray's workers can import it only if it is shipped."""
    pkg = tmp_path / "elsewhere" / "byo_shipped"
    pkg.mkdir(parents=True)
    for name in ("clip_rule.py", "tiny_net.py", "blobs.py", "graphs.py"):
        shutil.copy(ROOT / "examples" / name, pkg / name)
    (pkg / "__init__.py").write_text("")
    (pkg / "where.py").write_text(
        "import os\nfrom torch import nn\n\ndef model(input_shape, num_classes):\n"
        "    # the file this worker imported the package from: proof of how it got there\n"
        "    m = nn.Linear(input_shape[0], num_classes)\n    m.where = os.path.dirname(__file__)\n    return m\n")
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    ref = {"algorithm.name": "byo_shipped.clip_rule:ClippedSGD", "model.name": "byo_shipped.tiny_net:tiny_mlp",
           "data.name": "byo_shipped.blobs:blobs", "topology.name": "byo_shipped.graphs:ring_with_chords",
           "progress": False}
    from qgm_ray import plugins
    assert plugins.ship_paths(qgm_ray.load_config(BYO, ref)) == [str(pkg.resolve())]
    local = qgm_ray.run(BYO, {**ref, "backend": "local"}, tmp_path / "local", log=None)
    on_ray = qgm_ray.run(BYO, {**ref, "backend": "ray", "ray.clients_per_actor": 4}, tmp_path / "ray", log=None)
    assert on_ray.status == "completed" and rows(local.run_dir) == rows(on_ray.run_dir)
    import ray

    @ray.remote(num_cpus=0)
    def where():
        import byo_shipped
        return os.path.dirname(byo_shipped.__file__)
    env = plugins.ray_runtime_env(qgm_ray.load_config(BYO, ref))
    assert "runtime_resources" in ray.get(where.options(runtime_env=env).remote())
    with pytest.raises(Exception, match="byo_shipped"):   # without shipping, a worker cannot import it
        ray.get(where.remote())


@pytest.mark.ray
@pytest.mark.slow
def test_main_py_tune_sweeps_the_rules_own_knob(ray_session, tmp_path):
    """`main.py tune` on examples/byo.yaml (its grid: algorithm.options.clip), on the test
    session's Ray; a trial's numbers are those of `main.py` with that clip."""
    import ray
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    p = main_py("tune", "--config", str(BYO), "--output-dir", str(tmp_path / "sweep"), "--quiet", timeout=600,
                env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    import pandas as pd
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert sorted(results["algorithm.options.clip"]) == [0.5, 2.0] and set(results["status"]) == {"completed"}
    assert results["algorithm"].iloc[0] == "examples.clip_rule:ClippedSGD"
    trial = results.loc[results["algorithm.options.clip"] == 0.5, "trial_dir"].iloc[0]
    alone = main_py("--config", str(BYO), "--output-dir", str(tmp_path / "alone"), "--quiet",
                    "--set", "algorithm.options.clip=0.5")
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert rows(tmp_path / "sweep" / trial) == rows(tmp_path / "alone")
    clips = {c: rows(tmp_path / "sweep" / d) for c, d in zip(results["algorithm.options.clip"], results["trial_dir"])}
    assert clips[0.5] != clips[2.0]   # the knob reached the rule


# The plug-ins on a multi-node cluster with a lost node: tests/test_node_loss.py, on the
# cluster of the node-loss scenarios.


def test_a_sweep_checks_each_plug_in_model_of_its_grid_before_any_trial(tmp_path, monkeypatch):
    write_module(tmp_path, "bad_user_mod", BAD_OBJECTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from qgm_ray import tune as qtune
    cfg = qgm_ray.load_config(BYO, ["tune.grid={model.name: [examples.tiny_net:tiny_mlp, bad_user_mod.user:not_a_model]}"])
    with pytest.raises(ConfigError, match=r"trial name=bad_user_mod.user:not_a_model: model.name=.* returned a str") as e:
        qtune.check_trials(cfg.to_dict(), cfg.tune, log=quiet)
    assert "\n" not in str(e.value)


ALL_REDUCE = '''
import torch
import qgm_ray

class AllReduceSGDm(qgm_ray.Algorithm):
    """centralized_sgdm from its equations: all-reduce the raw gradients, one heavy-ball step."""
    defaults = {"momentum": 0.9}
    centralized = True

    def init(self, params):
        return {"momentum_buffer": torch.zeros_like(params), "step": qgm_ray.new_step_counter(params)}

    def pre_mix(self, state, params, grad, lr):
        return grad.clone()

    def post_mix(self, state, params, mixed, lr):
        g = mixed.add(params, alpha=self.weight_decay)
        m = state["momentum_buffer"].mul_(self.hparams["momentum"]).add_(g)
        qgm_ray.finish_round(state)
        return params.add(m, alpha=-lr)
'''


def test_a_centralized_plug_in_is_all_reduced_like_the_built_in(tmp_path, monkeypatch):
    write_module(tmp_path, "allreduce_mod", ALL_REDUCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    # on a directed graph too: an all-reduce rule ignores the graph (no push-sum)
    common = ["progress=false", "topology.name=examples.graphs:one_way_ring", "algorithm.momentum=0.7"]
    qgm_ray.run(BYO, common + ["algorithm.name=centralized_sgdm"], tmp_path / "built_in", log=None)
    plug = qgm_ray.run(BYO, common + ["algorithm.name=allreduce_mod.user:AllReduceSGDm"], tmp_path / "plug", log=None)
    assert rows(tmp_path / "built_in") == rows(tmp_path / "plug")
    assert float(plug.history["consensus_distance"].max()) == 0.0   # every client holds the same model


def test_tune_grids_over_a_models_and_a_graphs_own_options():
    from qgm_ray import tune as qtune
    cfg = qgm_ray.load_config(BYO, ["tune.grid={model.options.width: [8, 16], topology.options.every: [2, 4]}"])
    qtune.check_trials(cfg.to_dict(), cfg.tune, log=quiet)
    assert qtune.count_trials(cfg.tune) == 2 * 2
    with pytest.raises(ConfigError, match="trial every=0: topology.name='examples.graphs:ring_with_chords' with n=8"):
        bad = qgm_ray.load_config(BYO, ["tune.grid={topology.options.every: [4, 0]}"])
        qtune.check_trials(bad.to_dict(), bad.tune, log=quiet)


def test_a_random_plug_in_graph_follows_the_runs_seed():
    import types
    from qgm_ray.topology import make_topology
    import networkx as nx
    sys.modules["qgm_test_random"] = types.SimpleNamespace(
        g=lambda n, p=0.5, seed=None: nx.connected_watts_strogatz_graph(n, 4, p, seed=seed))
    try:
        a, b = (make_topology("qgm_test_random:g", 12, seed=s).matrix(0) for s in (1, 2))
        assert np.array_equal(a, make_topology("qgm_test_random:g", 12, seed=1).matrix(0)) and not np.array_equal(a, b)
    finally:
        del sys.modules["qgm_test_random"]
