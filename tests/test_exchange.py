"""The exchange stage: what an engine reports per round (RoundRecord), its byte counts, and the
seam between pre_mix and post_mix that both engines share."""
import pytest

from qgm_ray.runner import run as runner
from qgm_ray.config import load_config
from qgm_ray.engine.base import RoundRecord, round_bytes
from qgm_ray.engine.local import LocalEngine
from qgm_ray.engine.slowmo import outer_step_bytes

SMALL = ["data.name=synthetic", "model.name=mlp", "model.options={hidden: [16]}", "topology.n_clients=4",
         "data.batch_size=16", "schedule.epochs=2", "eval.every_epochs=0.5", "progress=false",
         "algorithm.lr=0.05", "data.alpha=1.0", "algorithm.name=dsgdm_n", "ray.clients_per_actor=2"]


def small(*extra):
    return load_config(None, SMALL + list(extra))


def quiet(msg):
    pass


def _engine(*extra):
    cfg = small(*extra)
    ds, parts = runner.prepare(cfg, log=quiet)
    return LocalEngine(cfg, ds, parts)


@pytest.mark.parametrize("extra, tau", [
    (["topology.name=ring"], 0),
    (["topology.name=complete"], 0),                                  # the all-reduce path
    (["topology.name=time_varying_random_ring"], 0),                  # W(t) changes every round
    (["topology.name=ring", "algorithm.slowmo_tau=3"], 3),            # outer steps on rounds 0, 3, 6
], ids=["ring", "complete", "time_varying", "ring-slowmo"])
def test_local_engine_records_count_each_round_once(extra, tau):
    """One record per round, handed to on_round as it is returned; its bytes are the gossip of
    W(t) plus a barrier step's all-reduce on the rounds that have one; nothing crosses nodes."""
    e = _engine(*extra)
    seen = []
    records = e.train(range(0, 4), lambda t: 0.05, on_round=seen.append)
    records += e.train(range(4, 7), lambda t: 0.05, on_round=seen.append)
    assert all(isinstance(r, RoundRecord) for r in records) and seen == records
    assert [r.round for r in records] == list(range(7))
    pb = e.payload_bytes
    want = [round_bytes(e.topology, e.centralized, 4, t, pb) + outer_step_bytes(tau, 4, t, pb) for t in range(7)]
    assert [r.bytes_sent for r in records] == want and min(want) > 0
    assert all(r.bytes_cross_node == 0 for r in records)
    if tau:
        assert records[3].bytes_sent - records[2].bytes_sent == 2 * 3 * pb   # the outer step's all-reduce


def test_a_stopped_chunk_returns_the_records_of_the_rounds_done():
    e = _engine("topology.name=ring")
    seen = []
    records = e.train(range(0, 10), lambda t: 0.05, on_round=seen.append, should_stop=lambda: len(seen) >= 3)
    assert [r.round for r in records] == [0, 1, 2]


def test_the_run_adds_up_the_engines_bytes(tmp_path, monkeypatch):
    """metrics.csv's bytes_sent is the sum of the records' bytes up to each row."""
    cfg = small("topology.name=ring", "algorithm.slowmo_tau=2", "schedule.epochs=1", "eval.every_epochs=1")
    counted = []
    real = runner.make_engine

    def counting(*args, **kwargs):
        engine = real(*args, **kwargs)
        train = engine.train

        def train_and_count(rounds, lr_of, on_round=None, should_stop=None):
            out = train(rounds, lr_of, on_round, should_stop)
            counted.extend(out)
            return out
        engine.train = train_and_count
        return engine

    monkeypatch.setattr(runner, "make_engine", counting)
    runner.run(cfg, tmp_path / "r", log=quiet)
    rows = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert int(last["round"]) == len(counted)
    assert int(last["bytes_sent"]) == sum(r.bytes_sent for r in counted) > 0
