"""Config loading, overrides and validation: every bad value is one clear ConfigError."""
from pathlib import Path

import pytest

from qgm_ray.config import Config, config_dict, from_dict, load_config, parse_override
from qgm_ray.errors import ConfigError
from qgm_ray.schedule import LRSchedule, rounds_per_epoch

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.algorithm.name == "qg_dsgdm_n"


def test_default_yaml_is_the_offline_default():
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert (cfg.data.name, cfg.model.name, cfg.topology.name, cfg.topology.n_clients) == ("mnist1d", "cnn1d", "ring", 16)
    assert cfg.data.alpha == 0.1 and cfg.algorithm.name == "qg_dsgdm_n" and cfg.algorithm.lr == 0.1


def test_file_holds_only_what_it_changes(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  alpha: 1.0\n")
    cfg = load_config(p)
    assert cfg.data.alpha == 1.0 and cfg.data.name == Config().data.name


def test_set_parses_yaml_values():
    cfg = load_config(None, ["data.alpha=10", "elastic.schedule=[[1, 8]]", "algorithm.betas=[0.8, 0.9]",
                             "ray.address=null"])
    assert cfg.data.alpha == 10.0 and isinstance(cfg.data.alpha, float)
    assert cfg.elastic.schedule == [[1, 8]]
    assert cfg.algorithm.betas == [0.8, 0.9]
    assert cfg.ray.address is None
    cfg = load_config(None, ["topology.options={graph: karate_club}", "topology.name=social", "topology.n_clients=34"])
    assert cfg.topology.options == {"graph": "karate_club"}


def test_parse_override_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("data.alpha")
    assert parse_override("a.b=[1, 0.1]") == ("a.b", [1, 0.1])


BAD = [
    (["nope=1"], "unknown key 'nope'"),
    (["data.alhpa=1"], "unknown key 'data.alhpa'"),
    (["data.alpha=0"], "data.alpha must be > 0"),
    (["data.alpha=-1"], "data.alpha must be > 0"),
    (["data.alpha=abc"], "data.alpha: expected a number"),
    (["algorithm.lr=0"], "algorithm.lr must be > 0"),
    (["algorithm.lr=-0.1"], "algorithm.lr must be > 0"),
    (["algorithm.name=adamw"], "algorithm.name='adamw' is unknown; choose one of .*qg_dsgdm_n"),
    (["algorithm.momentum=1.0"], "algorithm.momentum must be in \\[0, 1\\)"),
    (["algorithm.betas=[0.9]"], "algorithm.betas must be two numbers"),
    (["data.name=imagenet"], "data.name='imagenet' is unknown; choose one of .*mnist1d"),
    (["model.name=vgg"], "model.name='vgg' is unknown; choose one of .*cnn1d"),
    (["topology.name=hypercube"], "hypercube"),
    (["topology.name=torus", "topology.n_clients=15"], "torus"),
    (["topology.name=social", "topology.n_clients=16"], "32"),
    (["topology.n_clients=0"], "topology.n_clients must be >= 1"),
    (["backend=mpi"], "backend='mpi' is not allowed; choose one of local, ray"),
    (["data.partition=shards"], "data.partition='shards' is not allowed; choose one of iid, dirichlet, sorted"),
    (["data.batch_size=0"], "data.batch_size must be >= 1"),
    (["data.batch_size=1.5"], "data.batch_size: expected an integer"),
    (["schedule.epochs=0"], "schedule.epochs must be > 0"),
    (["schedule.milestones=[0.5, 1.5]"], "schedule.milestones must be fractions"),
    (["schedule.lr_scaleup=quadratic"], "schedule.lr_scaleup='quadratic' is not allowed"),
    (["ray.clients_per_actor=0"], "ray.clients_per_actor must be 'auto' or an integer >= 1"),
    (["ray.clients_per_actor=many"], "ray.clients_per_actor must be 'auto' or an integer >= 1"),
    (["ray.gpus_per_client=lots"], "ray.gpus_per_client must be 'auto' or a number"),
    (["compute.pack_clients=sometimes"], "compute.pack_clients='sometimes' is not allowed; choose one of auto, true, false"),
    (["compute.pack_clients=1"], "compute.pack_clients: expected one of bool, str"),
    (["fault_tolerance.on_failure=ignore"], "fault_tolerance.on_failure='ignore' is not allowed; choose one of replay, drop"),
    (["fault_tolerance.checkpoint_every=-1"], "fault_tolerance.checkpoint_every must be >= 0"),
    (["elastic.schedule=[[1, 15]]", "topology.name=torus"], "torus"),
    (["elastic.schedule=[5, 8]"], "elastic.schedule entries must be"),
    (["elastic.max_clients=4"], "elastic.max_clients=4 must be >= the largest client count"),
    (["tune.grid={data.alfa: [1, 2]}"], "tune.grid: 'data.alfa' is not a config key"),
    (["tune.search={algorithm.lr: {normal: [0, 1]}}"], "tune.search.algorithm.lr must be .uniform"),
    (["eval.every_epochs=0"], "eval.every_epochs must be > 0"),
    (["progress=maybe"], "progress: expected true or false"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[o[0] for o, _ in BAD])
def test_bad_config_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_round_trip_through_dict():
    cfg = load_config(None, ["data.alpha=1", "topology.name=complete", "topology.n_clients=5"])
    assert from_dict(cfg.to_dict()) == cfg
    assert config_dict(None, ["seed=3"])["seed"] == 3


def test_lr_schedule_official_recipe():
    # lr 0.1 per 64 samples, batch 32, n=16 scale-up, 5 warm-up epochs, decay at 50% / 75%.
    cfg = load_config(None, ["schedule.reference_batch=64", "schedule.lr_scaleup=linear",
                             "schedule.warmup_epochs=5", "schedule.epochs=100", "algorithm.lr=0.1"])
    rpe = rounds_per_epoch(50_000, 16, 32)
    assert rpe == 98
    s = LRSchedule.from_config(cfg, rpe)
    assert s.base_lr == pytest.approx(0.05) and s.peak_lr == pytest.approx(0.8)
    assert s(0) == pytest.approx(0.05)
    assert s(5 * rpe) == pytest.approx(0.8)
    assert s(int(2.5 * rpe)) == pytest.approx(0.05 + 0.75 * 0.5, rel=1e-2)
    assert s(50 * rpe - 1) == pytest.approx(0.8)
    assert s(50 * rpe) == pytest.approx(0.08)
    assert s(75 * rpe) == pytest.approx(0.008)
    lrs = [s(t) for t in range(s.total_rounds)]
    assert all(b >= a for a, b in zip(lrs[:5 * rpe], lrs[1:5 * rpe]))  # warm-up never goes down


def test_lr_schedule_constant_without_milestones():
    cfg = load_config(None, ["schedule.milestones=[]", "algorithm.lr=0.3"])
    s = LRSchedule.from_config(cfg, 10)
    assert {s(t) for t in range(s.total_rounds)} == {0.3}


# Inputs a demanding user tried (issue 10): each one line naming the key and what is allowed.
BAD_FROM_THE_FIELD = [
    (["seed=-1"], r"seed must be an integer in \[0, 2\^32\) \(0 .. 4294967295\), got -1"),
    (["data.seed=-3"], r"data.seed must be an integer in \[0, 2\^32\)"),
    (["data.options.num_samples=-5"], r"data.options.num_samples must be an integer >= 1, got -5"),
    (["data.name=synthetic", "data.options={num_classes: 0}"], r"data.options.num_classes must be an integer >= 2, got 0"),
    (["schedule.epochs=.inf"], r"schedule.epochs: expected a finite number, got inf"),
    (["algorithm.lr=.inf"], r"algorithm.lr: expected a finite number, got inf"),
    (["algorithm.lr=.nan"], r"algorithm.lr: expected a finite number"),
    (["model.name=mlp", "model.options.hidden=abc"], r"model.options.hidden must be a list of layer widths"),
    (["model.name=mlp", "model.options.hidden=[16, 0]"], r"model.options.hidden must be a list of layer widths"),
    (["model.options.channels=two"], r"model.options.channels must be an integer >= 1"),
    (["tune.search={algorithm.lr: {uniform: 0.5}}"], r"tune.search.algorithm.lr must be .uniform\|loguniform: \[lo, hi\]"),
    (["tune.search={algorithm.lr: {uniform: [1, 0.1]}}"], r"tune.search.algorithm.lr must be"),
    (["tune.search={algorithm.lr: {loguniform: [0, 1]}}"], r"loguniform needs lo > 0"),
    (["tune.search={seed: {randint: [0.5, 3]}}"], r"tune.search.seed must be"),
    (["tune.search={seed: {choice: []}}"], r"tune.search.seed must be"),
    (["tune.metric=acc"], r"tune.metric='acc' is not a reported metric; choose one of test_accuracy"),
    (["tune.max_concurrent_trials=-1"], r"tune.max_concurrent_trials must be >= 0"),
    (["tune.grace_period_evals=0"], r"tune.grace_period_evals must be >= 1"),
    (["name=../../x"], r"name='../../x' is not allowed: it names the run directory"),
    (["name=a/b"], r"name='a/b' is not allowed"),
    (["name=.hidden"], r"name='.hidden' is not allowed"),
    (["output_dir="], r"output_dir must be a directory path or null"),
    (["topology.name=graph", "topology.options={generator: is_directed}"],
     r"topology.options.generator='is_directed' is not a networkx graph generator"),
    (["data.name=cifar10", "data.options.num_samples=5"],
     r"data.options.num_samples is not an option of data.name='cifar10' \(allowed: augment\); remove it, e.g. --set data.options=\{\}"),
    (["data.options.augment=rotate"], r"data.options.augment='rotate' is not allowed; choose one of crop_flip"),
]


@pytest.mark.parametrize("overrides,message", BAD_FROM_THE_FIELD, ids=[" ".join(o) for o, _ in BAD_FROM_THE_FIELD])
def test_bad_inputs_from_the_field_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(ROOT / "configs" / "default.yaml", overrides)
    assert "\n" not in str(e.value)


def test_changing_the_dataset_drops_the_files_dataset_options():
    # configs/default.yaml sets data.options.num_samples for mnist1d; cifar10 takes none.
    cfg = load_config(ROOT / "configs" / "default.yaml", ["data.name=cifar10"])
    assert cfg.data.name == "cifar10" and cfg.data.options == {}
    # Options set on the same command line are the user's: kept (and checked).
    cfg = load_config(ROOT / "configs" / "default.yaml", ["data.name=synthetic", "data.options.num_samples=500"])
    assert cfg.data.options == {"num_samples": 500}
    # Same dataset: the file's options stay.
    cfg = load_config(ROOT / "configs" / "default.yaml", ["data.alpha=1"])
    assert cfg.data.options == {"num_samples": 20000}


def test_finite_numbers_still_accepted():
    cfg = load_config(None, ["algorithm.lr=1e-3", "schedule.epochs=0.5", "name=my_run-1.b"])
    assert cfg.algorithm.lr == 1e-3 and cfg.schedule.epochs == 0.5


def test_describe_keys_lists_every_key_with_default_and_choices():
    from qgm_ray.config import describe_keys
    text = describe_keys()
    keys = {line.split()[0] for line in text.splitlines()[1:]}
    flat = set()

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("options", "grid", "search"):
                walk(v, prefix + k + ".")
            else:
                flat.add(prefix + k)
    walk(Config().to_dict())
    assert keys == flat
    line = next(ln for ln in text.splitlines() if ln.startswith("data.partition "))
    assert "dirichlet" in line and "one of iid, dirichlet, sorted" in line
    assert "one of test_accuracy" in next(ln for ln in text.splitlines() if ln.startswith("tune.metric "))


NONSENSE = [   # accepted before 2026-12-02 (issue 18): each is now one line naming the key
    (["schedule.epochs=1e12"], "schedule.epochs must be <= 100000"),
    (["eval.every_epochs=0.00001"], "eval.every_epochs=1e-05 gives 4e\\+06 evaluations"),
    (["backend=ray", "ray.dashboard_host=not_a_host"], "ray.dashboard_host='not_a_host' is not an address of this machine"),
    (["backend=ray", "ray.dashboard_host=192.0.2.1"], "ray.dashboard_host='192.0.2.1' is not an address of this machine"),
    (["elastic.schedule=[[50, 8]]"], "the step at epoch 50 is outside the run"),
    (["elastic.schedule=[[true, 2]]"], "elastic.schedule entries must be \\[epoch, n_clients\\]"),
    (["elastic.schedule=[[1, false]]"], "elastic.schedule entries must be \\[epoch, n_clients\\]"),
    (["topology.options={graph: karate_club}"], "topology.options.graph is not an option of topology.name=ring"),
    (["topology.name=random_peer", "topology.options={edge_list: x.txt}"],
     "topology.options.edge_list is not an option of topology.name=random_peer \\(its options: degree, lazy\\)"),
]


@pytest.mark.parametrize("overrides,message", NONSENSE)
def test_nonsense_is_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_dashboard_host_is_checked_only_where_this_process_starts_ray(monkeypatch):
    assert load_config(None, ["backend=ray", "ray.dashboard_host=0.0.0.0"]).ray.dashboard_host == "0.0.0.0"
    load_config(None, ["backend=local", "ray.dashboard_host=not_a_host"])   # no Ray started
    load_config(None, ["backend=ray", "ray.address=10.0.0.1:6379", "ray.dashboard_host=not_a_host"])
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    load_config(None, ["backend=ray", "ray.dashboard_host=not_a_host"])


def test_social_graph_gives_the_client_count_unless_set():
    assert load_config(None, ["topology.name=social"]).topology.n_clients == 32
    cfg = load_config(None, ["topology.name=social", "topology.options={graph: karate_club}"])
    assert cfg.topology.n_clients == 34
    # the default file's 16 was written for its ring: a new graph name takes the graph's size
    assert load_config(ROOT / "configs" / "default.yaml", ["topology.name=social"]).topology.n_clients == 32
    with pytest.raises(ConfigError, match="needs n_clients=32, got 16"):
        load_config(None, ["topology.name=social", "topology.n_clients=16"])   # set explicitly: checked
    assert load_config(None, ["topology.name=torus"]).topology.n_clients == 16
