"""Conditional grids in `tune.grid`: a config section's branches, each with the options only it
has, expand to exactly the trials written, in Tune's own terms, and a bad branch is refused in
one line before anything starts."""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from qgm_ray import grid as tune_grid
from qgm_ray import tune as qtune
from qgm_ray.config import config_dict, from_dict, load_config
from qgm_ray.errors import ConfigError
from tests.helpers import main_py
from helpers import quiet

ROOT = Path(__file__).resolve().parent.parent
CLIP = "examples.clip_rule:ClippedSGD"   # a plug-in rule with an option of its own: clip

TINY = ["name=cond", "backend=local", "progress=false", "data.name=synthetic", "model.name=mlp",
        "model.options={hidden: [8]}", "topology.n_clients=4", "data.batch_size=16", "algorithm.lr=0.05",
        "schedule.epochs=1", "eval.every_epochs=1", "eval.local_models=false"]

RULES = f"{{name: [dsgd, dsgdm_n]}}, {{name: '{CLIP}', options.clip: [0.5, 2.0]}}"
GRAPHS = ("{name: ring, n_clients: 4}, "
          "{name: social, n_clients: 15, options.graph: florentine_families}")


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def test_a_conditional_grid_expands_to_exactly_the_trials_written():
    cfg = tiny(f"tune.grid={{seed: [0, 1], algorithm: [{RULES}]}}")
    expected = [{"seed": s, **rule} for s in (0, 1) for rule in (
        {"algorithm.name": "dsgd"}, {"algorithm.name": "dsgdm_n"},
        {"algorithm.name": CLIP, "algorithm.options.clip": 0.5},
        {"algorithm.name": CLIP, "algorithm.options.clip": 2.0})]
    assert qtune.grid_points(cfg.tune) == expected
    assert qtune.count_trials(cfg.tune) == 8
    assert qtune.grid_keys(cfg.tune) == ["seed", "algorithm.name", "algorithm.options.clip"]
    base = cfg.to_dict()
    configs = [qtune.trial_config(base, p) for p in expected]
    # The option goes only with the rule that has it; every other trial keeps none.
    assert [(c.seed, c.algorithm.name, c.algorithm.options) for c in configs] == [
        (s, name, opts) for s in (0, 1) for name, opts in (
            ("dsgd", {}), ("dsgdm_n", {}), (CLIP, {"clip": 0.5}), (CLIP, {"clip": 2.0}))]
    assert all(c.tune.grid == {} for c in configs)


def test_branches_of_two_sections_multiply_and_tie_a_graph_to_its_size():
    cfg = tiny(f"tune.grid={{topology: [{GRAPHS}], algorithm: [{RULES}]}}")
    points = qtune.grid_points(cfg.tune)
    assert len(points) == qtune.count_trials(cfg.tune) == 2 * 4
    topologies = {(c.topology.name, c.topology.n_clients, tuple(c.topology.options.items()))
                  for c in (qtune.trial_config(cfg.to_dict(), p) for p in points)}
    assert topologies == {("ring", 4, ()), ("social", 15, (("graph", "florentine_families"),))}
    # Without branches the graph's option and size go with every graph: refused trial by trial.
    plain = tiny("tune.grid={topology.name: [ring, social], topology.options.graph: [florentine_families]}")
    with pytest.raises(ConfigError, match="trial ring graph=florentine_families: topology.options.graph is not "
                                          "an option of topology.name=ring"):
        qtune.check_trials(plain.to_dict(), plain.tune, log=quiet)
    qtune.check_trials(cfg.to_dict(), cfg.tune, log=quiet)


@pytest.mark.parametrize("grid", [
    f"{{seed: [0, 1], algorithm: [{RULES}]}}",
    f"{{topology: [{GRAPHS}], data.alpha: [1, 0.1], algorithm: [{RULES}]}}",
    "{algorithm: [{name: qg_dsgdm_n, lr: [0.1, 0.3], momentum: 0.5}, {name: dsgd, lr: [1.0]}], seed: [0, 1, 2]}",
    "{data.alpha: [1, 0.1], seed: [0, 1]}",   # a plain grid: as before
])
def test_tune_expands_the_param_space_into_the_same_trials(grid):
    """What Tune itself generates from param_space (nested grid_search over the branches' dicts),
    flattened as a trial does, is the list grid_points counts and validates (Tune varies a
    branch's own keys fastest, so only the order may differ)."""
    from ray.tune.search.variant_generator import generate_variants
    cfg = tiny(f"tune.grid={grid}")
    tuned = [qtune.trial_params(v) for _, v in generate_variants(qtune.param_space(cfg.tune))]
    assert sorted(map(repr, tuned)) == sorted(map(repr, qtune.grid_points(cfg.tune)))
    assert len(tuned) == qtune.count_trials(cfg.tune) == len(set(map(repr, tuned)))


def test_tune_sees_a_branch_as_its_own_grid_search_over_dicts():
    from ray import tune
    cfg = tiny(f"tune.grid={{algorithm: [{RULES}]}}")
    assert qtune.param_space(cfg.tune) == {"algorithm": tune.grid_search([
        {"name": tune.grid_search(["dsgd", "dsgdm_n"])},
        {"name": CLIP, "options.clip": tune.grid_search([0.5, 2.0])}])}
    assert qtune.trial_params({"algorithm": {"name": CLIP, "options.clip": 2.0}, "seed": 1,
                               "data.options": {"a": 1}}) == \
        {"algorithm.name": CLIP, "algorithm.options.clip": 2.0, "seed": 1, "data.options": {"a": 1}}


def test_a_list_valued_key_in_a_branch_is_a_list_of_lists():
    cfg = tiny("tune.grid={algorithm: [{name: dadam, betas: [[0.9, 0.99], [0.5, 0.9]]}]}")
    assert [qtune.trial_config(cfg.to_dict(), p).algorithm.betas for p in qtune.grid_points(cfg.tune)] == \
        [[0.9, 0.99], [0.5, 0.9]]


def test_the_point_a_trial_took_is_found_from_its_config():
    cfg = tiny(f"tune.grid={{seed: [0, 1], algorithm: [{RULES}]}}")
    base = cfg.to_dict()
    from qgm_ray.config import get_dotted
    for point in qtune.grid_points(cfg.tune):
        d = qtune.trial_config(base, point).to_dict()
        values = {}
        for k in qtune.grid_keys(cfg.tune):
            try:
                values[k] = get_dotted(d, k)
            except KeyError:   # an option only some trials have
                pass
        assert tune_grid.point_of(values, cfg.tune.grid) == point


# ---------------------------------------------------------------- refusals, one line each

@pytest.mark.parametrize("grid,message", [
    ("{algorithm: [{name: dsgd}, {}]}", r"tune.grid.algorithm\[1\]: an empty branch"),
    ("{algorithm: [{name: dsgd, options: {clip: 1}}]}", r"tune.grid.algorithm\[0\].options: a branch holds a list "
                                                        r"of values or one value, got the mapping"),
    ("{algorithm: [{name: [dsgd, d2]}, {name: dsgdm_n, lr: []}]}", r"tune.grid.algorithm\[1\].lr: an empty list"),
    ("{algorithm.lr: [0.1], algorithm: [{name: dsgd, lr: [1.0]}]}",
     r"tune.grid.algorithm\[0\]: algorithm.lr is also a grid key of its own"),
    ("{algorithm: [{name: dsgd}, dsgdm_n]}", r"tune.grid.algorithm: a conditional grid is a list of branches"),
    ("{seed: [{value: 1}]}", r"tune.grid.seed: branches \(a list of mappings\) go under a config section"),
    ("{algorithm: [{name: dsgd, clipp: [1]}]}", r"tune.grid: 'algorithm.clipp' is not a config key"),
])
def test_a_bad_branch_is_one_line(grid, message):
    with pytest.raises(ConfigError, match=message) as e:
        tiny(f"tune.grid={grid}")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("branch,message", [
    (f"{{name: '{CLIP}', options.clip: [1.0, -1]}}", r"^trial examples.clip_rule:ClippedSGD clip=-1: algorithm.options.clip must be > 0, got -1.0$"),
    ("{name: dsgd, options.clip: [1.0]}",
     r"^trial dsgd clip=1: algorithm.options.clip is not an option of algorithm.name='dsgd'"),
])
def test_each_trial_of_a_branch_is_validated_before_any_starts(branch, message, tmp_path):
    cfg = tiny(f"tune.grid={{algorithm: [{{name: dsgdm_n}}, {branch}]}}")
    with pytest.raises(ConfigError, match=message) as e:
        qtune.run_sweep(cfg, output_dir=tmp_path / "sweep", log=quiet)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "sweep").exists()


def test_main_py_tune_with_a_bad_branch_exits_2_with_one_line_and_writes_nothing(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"name": "bad", "backend": "local", "tune": {"grid": {
        "algorithm": [{"name": "dsgdm_n"}, {"name": "dsgd", "options.clip": [1.0]}]}}}))
    out = main_py("tune", "--config", str(cfg), "--output-dir", str(tmp_path / "sweep"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "algorithm.options.clip is not an option of algorithm.name='dsgd'" in lines[0]
    assert lines[0].startswith("config error: trial dsgd clip=1: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


# ---------------------------------------------------------------- the shipped sweep

def test_tune_compression_yaml_is_a_conditional_grid_over_the_compressors():
    """configs/tune_compression.yaml's shape (its keys are validated with the compression section)."""
    d = yaml.safe_load((ROOT / "configs" / "tune_compression.yaml").read_text())
    grid = d["tune"]["grid"]
    assert tune_grid.problem(grid) is None
    assert grid["algorithm.name"] == ["dsgdm_n", "qg_dsgdm_n"]
    assert grid["data.alpha"] == [1, 0.1] and grid["seed"] == [0, 1, 2]
    assert (d["data"]["name"], d["topology"]["name"], d["topology"]["n_clients"]) == ("mnist1d", "ring", 16)
    points = tune_grid.points(grid)
    assert len(points) == tune_grid.count(grid) == 2 * 2 * 3 * 13
    ops = {p["compression.op"] for p in points}
    assert ops == {"none", "top_k", "random_k", "qsgd", "sign"}
    for p in points:   # each compressor carries only the options it reads
        assert ("compression.keep" in p) == (p["compression.op"] in ("top_k", "random_k"))
        assert ("compression.levels" in p) == (p["compression.op"] == "qsgd")
        assert ("compression.consensus_lr" in p) == (p["compression.op"] != "none")


# ---------------------------------------------------------------- one tiny real sweep

@pytest.mark.ray
@pytest.mark.slow
def test_a_tiny_conditional_sweep_runs_each_branch_with_its_own_options(ray_session, tmp_path):
    """Through Tune itself: every trial gets its branch's keys (dotted again), its run directory
    holds that config, and the report shows each rule's option value as a row of its own."""
    cfg = tiny(f"tune.grid={{algorithm: [{{name: dsgd}}, {{name: '{CLIP}', options.clip: [0.5, 2.0]}}]}}",
               f"data.root={tmp_path / 'data'}")
    out = qtune.run_sweep(cfg, output_dir=tmp_path / "sweep", log=quiet)
    assert out["complete"]
    df = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(df) == 3 and set(df["status"]) == {"completed"}
    got = set()
    for _, r in df.iterrows():
        trial = from_dict(config_dict(tmp_path / "sweep" / r["trial_dir"] / "config.yaml"))
        assert trial.algorithm.name == r["algorithm"]
        clip = r["algorithm.options.clip"]
        assert trial.algorithm.options == ({} if pd.isna(clip) else {"clip": clip})
        got.add((trial.algorithm.name, None if pd.isna(clip) else clip))
    assert got == {("dsgd", None), (CLIP, 0.5), (CLIP, 2.0)}
    table = (tmp_path / "sweep" / "table.md").read_text()
    for row in ("| dsgd |", f"| {CLIP} clip=0.5 |", f"| {CLIP} clip=2 |"):
        assert row in table
    data = pd.read_csv(tmp_path / "sweep" / "accuracy_vs_bytes.csv")
    assert set(data["line"]) == {"dsgd", f"{CLIP} clip=0.5", f"{CLIP} clip=2"}
