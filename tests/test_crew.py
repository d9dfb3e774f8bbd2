"""`ray.reuse_actors`: a finished run's coordinator and ClientActors serve the next run of the
driver (engine/crew.py), and the numbers are those of new actors, bit for bit."""
import dataclasses

import pytest

from qgm_ray.config import load_config
from qgm_ray.engine import crew
from qgm_ray.runner import run as runner

from helpers import quiet, read_metrics, small_run

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

BASE = small_run("topology.n_clients=4", "schedule.epochs=1", "eval.every_epochs=0.5", "backend=ray",
                 "ray.clients_per_actor=2", "ray.reuse_actors=false")   # the default; tests/helpers.py sets it
KEYS = ("train_loss", "test_accuracy", "local_test_accuracy", "consensus_distance", "bytes_sent")


def cfg_of(*extra):
    return load_config(None, BASE + list(extra))


def run_capturing(cfg, run_dir, monkeypatch):
    """Run `cfg`; returns (metrics rows, its engine's coordinator name, ClientActor pids)."""
    seen = {}
    make = runner.make_engine

    def wrapped(*a, **k):
        engine = make(*a, **k)
        seen["name"], seen["pids"] = engine.name, engine.actor_pids()
        return engine
    monkeypatch.setattr(runner, "make_engine", wrapped)
    runner.run(cfg, run_dir, log=quiet)
    return [{k: r[k] for k in KEYS} for r in read_metrics(run_dir)], seen["name"], seen["pids"]


@pytest.fixture(autouse=True)
def nothing_kept_after(ray_session):
    yield
    crew.release()
    assert crew.kept() is None


def alive_coordinators():
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "qgm"}


def local_rows(cfg, run_dir):
    """The same run on the local engine: what new ClientActors compute, bit for bit
    (tests/test_ray_engine.py), without starting any."""
    runner.run(dataclasses.replace(cfg, backend="local"), run_dir, log=quiet)
    return [{k: r[k] for k in KEYS} for r in read_metrics(run_dir)]


def test_the_next_run_takes_the_kept_actors_and_gives_the_numbers_of_new_ones(tmp_path, monkeypatch):
    fresh_a = local_rows(cfg_of("algorithm.name=qg_dsgdm_n"), tmp_path / "fresh_a")
    fresh_b = local_rows(cfg_of("algorithm.name=dsgdm_n", "seed=3"), tmp_path / "fresh_b")

    rows_a, name_a, pids_a = run_capturing(cfg_of("algorithm.name=qg_dsgdm_n", "ray.reuse_actors=true"),
                                           tmp_path / "a", monkeypatch)
    assert crew.kept() is not None and crew.kept().name == name_a
    assert name_a in alive_coordinators()
    # Another rule, seed and data draw on the same processes: every actor starts the run anew.
    rows_b, name_b, pids_b = run_capturing(cfg_of("algorithm.name=dsgdm_n", "seed=3", "ray.reuse_actors=true"),
                                           tmp_path / "b", monkeypatch)
    assert (name_b, pids_b) == (name_a, pids_a)
    assert rows_a == fresh_a
    assert rows_b == fresh_b

    # Actors of another size (one client each) cannot serve: the kept ones are released.
    _, name_c, pids_c = run_capturing(cfg_of("ray.clients_per_actor=1", "ray.reuse_actors=true"),
                                      tmp_path / "c", monkeypatch)
    assert name_c != name_a and not set(pids_c) & set(pids_a)
    assert name_a not in alive_coordinators()
    assert crew.kept().name == name_c

    # A run that does not reuse actors (the default) releases what is kept, its CPUs are Ray's
    # again, and keeps nothing itself.
    _, name_d, _ = run_capturing(cfg_of(), tmp_path / "d", monkeypatch)
    assert crew.kept() is None and not {name_c, name_d} & alive_coordinators()


def test_release_actors_kills_the_kept_crew(tmp_path, monkeypatch):
    import qgm_ray
    _, name, _ = run_capturing(cfg_of("ray.reuse_actors=true"), tmp_path / "a", monkeypatch)
    assert name in alive_coordinators()
    qgm_ray.release_actors()
    assert crew.kept() is None and name not in alive_coordinators()


def test_an_engine_interrupted_inside_a_call_keeps_nothing(monkeypatch):
    from qgm_ray.engine.ray_engine import RayEngine
    cfg = cfg_of("ray.reuse_actors=true")
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = RayEngine(cfg, ds, parts, log=quiet)

    def interrupted(record):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        engine.train(range(0, 3), lambda t: 0.05, on_round=interrupted)
    name = engine.name
    engine.close()
    assert crew.kept() is None and name not in alive_coordinators()
