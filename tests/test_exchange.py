"""The exchange stage: what an engine reports per round (RoundRecord), its byte counts, and the
seam between pre_mix and post_mix that both engines share."""
import pytest

from qgm_ray.runner import run as runner
from qgm_ray.config import load_config
from qgm_ray.engine.base import RoundRecord, round_bytes
from qgm_ray.engine.local import LocalEngine
from qgm_ray.engine.slowmo import outer_step_bytes

from helpers import local_engine, quiet, small_run

SMALL = small_run("backend=local", "topology.n_clients=4", "schedule.epochs=2", "eval.every_epochs=0.5",
                  "algorithm.name=dsgdm_n", "ray.clients_per_actor=2")


def small(*extra):
    return load_config(None, SMALL + list(extra))


def _engine(*extra):
    return local_engine(small(*extra))


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


# ------------------------------------------------------------------ the stage's pure parts

def _exchange(topology_name, n=6, k=4, **options):
    from qgm_ray.engine.exchange import Exchange
    from qgm_ray.topology import make_topology
    topo = make_topology(topology_name, n, seed=0, **options)
    groups = [list(range(a, min(a + k, n))) for a in range(0, n, k)]
    return Exchange(topo, False, groups, payload_floats=5)


@pytest.mark.parametrize("name", ["ring", "time_varying_random_ring", "complete"])
def test_mix_is_the_mixing_matrix_applied_to_the_payloads(name):
    """Every block's mixed rows are W(t) times all payloads (the all-reduce: the mean), the
    blocks' payloads read wherever they are held."""
    import torch
    ex = _exchange(name)
    g = torch.Generator().manual_seed(1)
    payloads = [torch.randn(len(grp), 5, generator=g, dtype=torch.float64) for grp in ex.groups]
    everyone = torch.cat(payloads)
    for t in range(3):
        mixed = torch.cat(ex.mix(t, payloads))
        W = torch.full((6, 6), 1 / 6, dtype=torch.float64) if ex.all_reduce else \
            torch.from_numpy(ex.W(t).toarray()).double()
        torch.testing.assert_close(mixed, W @ everyone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["ring", "time_varying_random_ring", "complete"])
def test_edge_bytes_add_up_to_the_round_bytes(name):
    ex = _exchange(name)
    for t in range(3):
        edges = ex.edge_bytes(t)
        assert sum(edges.values()) == ex.round_bytes(t) > 0
        assert all(a != b and 0 <= a < 6 and 0 <= b < 6 for a, b in edges)
        if not ex.all_reduce:   # an edge j -> i wherever client i mixes client j's payload
            dense = ex.W(t).toarray()
            assert set(edges) == {(j, i) for i in range(6) for j in range(6) if i != j and dense[i, j] != 0}


def test_cross_node_bytes_count_only_what_leaves_a_node():
    ex = _exchange("ring", n=8, k=2)
    assert ex.cross_node_bytes(0, ["a"] * 4) == 0
    # blocks {0,1} {2,3} on a, {4,5} {6,7} on b: 3 <-> 4 and 7 <-> 0 cross, each payload once
    assert ex.cross_node_bytes(0, ["a", "a", "b", "b"]) == 4 * ex.payload_bytes
    assert ex.record(0, 1.0, ["a", "a", "b", "b"]).bytes_cross_node == 4 * ex.payload_bytes
    assert ex.record(0, 1.0).bytes_cross_node == 0


def test_the_wire_carries_payload_rows_bit_for_bit():
    import torch
    from qgm_ray.engine.wire import FLOAT32, wire_of
    rows = torch.randn(3, 7)
    arrays = FLOAT32.encode(rows)
    assert len(arrays) == 3 and all(a.flags["C_CONTIGUOUS"] and a.dtype.name == "float32" for a in arrays)
    for a in arrays:
        a.setflags(write=False)   # what the object store hands an actor
    back = FLOAT32.decode(arrays)
    assert all(torch.equal(b, r) for b, r in zip(back, rows))
    assert FLOAT32.nbytes(7) == 28 and wire_of(small()) is FLOAT32


# ------------------------------------------------------------------ round barriers

class EveryOtherRoundAverage:
    """A barrier as a new module would write one: every second round, every client takes the
    plain average of all clients (its bytes: one all-reduce)."""
    name = "every_other_round_average"

    def due(self, t):
        return t % 2 == 1

    def nbytes(self, n, t, payload_bytes):
        return 2 * (n - 1) * payload_bytes if self.due(t) else 0

    def gather(self, block):
        return block.params.detach().to("cpu").clone()

    def reduce(self, parts):
        import torch
        return torch.cat(parts).mean(0)

    def apply(self, block, reduced, lr):
        block.params.copy_(reduced.to(block.params.device).expand_as(block.params))

    def joiner_state(self, block):
        return None

    def adopt(self, block, rows, state):
        pass


def test_a_registered_barrier_runs_on_the_local_engine_with_its_bytes(monkeypatch):
    import torch
    from qgm_ray.engine import barriers
    barriers.barriers_for(None)   # the built-in ones are registered before the list is swapped
    monkeypatch.setattr(barriers, "_FACTORIES", list(barriers._FACTORIES))
    barriers.register(lambda algorithm: EveryOtherRoundAverage())
    e = _engine("topology.name=ring")
    assert [x.name for x in e.exchange.barriers] == ["every_other_round_average"]
    plain = round_bytes(e.topology, False, 4, 0, e.payload_bytes)
    records = e.train(range(0, 2), lambda t: 0.05)
    assert [r.bytes_sent for r in records] == [plain, plain + 6 * e.payload_bytes]
    p = e.params
    assert torch.equal(p, p[:1].expand_as(p))   # round 1 ended with the average
    e.train(range(2, 3), lambda t: 0.05)
    assert not torch.equal(e.params, e.params[:1].expand_as(e.params))


def test_actor_barrier_calls_equal_the_local_engines_bit_for_bit():
    """The generic barrier calls of a ClientActor (gather, reduce at the first actor, apply;
    numpy in between, as through Ray's object store) give the local engine's bits (SlowMo,
    push-sum weights included)."""
    import numpy as np
    import torch
    from qgm_ray.engine.actors import ClientActor, dataset_meta
    e = _engine("topology.name=random_peer", "topology.options={degree: 2}", "algorithm.slowmo_tau=3",
                "algorithm.slowmo_beta=0.5")
    e.train(range(0, 3), lambda t: 0.05)
    states = e.client_states()
    ds = e.ds
    arrays = [np.ascontiguousarray(x.numpy()) for x in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)]
    actors = []
    for grp in e.layout.groups(4):
        a = ClientActor(e.cfg, dataset_meta(ds), [np.asarray(p) for p in e.parts], 0, *arrays)
        a.set_clients(grp, grp)
        a.load_state_dicts([states[i] for i in grp])
        actors.append(a)
    assert actors[0].block.push_sum and [x.name for x in actors[0].barriers] == ["slowmo"]
    parts = [a.barrier_gather(0) for a in actors]
    reduced = actors[0].barrier_reduce(0, *parts)
    assert isinstance(reduced, np.ndarray)
    for a in actors:
        a.barrier_apply(0, 0.05, reduced)
    e.exchange.run_barriers(3, e.blocks, 0.05)
    assert torch.equal(torch.cat([a.block.params for a in actors]), e.params)
    assert torch.equal(torch.cat([a.block.weight for a in actors]), e.push_sum_weights())
    for sa, sb in zip([s for a in actors for s in a.block.client_states()], e.client_states()):
        assert all(torch.equal(sa["algorithm"][k], sb["algorithm"][k]) for k in sb["algorithm"])


# ------------------------------------------------------------------ the engine interface

def _interface():
    from qgm_ray.engine.base import Engine
    methods = [m for m in vars(Engine) if not m.startswith("_") and callable(vars(Engine)[m])]
    return methods, list(Engine.__annotations__)


def test_both_engines_implement_the_whole_engine_interface():
    """What engine/base.py's Engine lists is what the runner reads: every method on both
    engine classes, every attribute on a live LocalEngine (RayEngine sets its own in __init__,
    read here from the source: starting Ray is the Ray tests' job)."""
    import inspect
    from qgm_ray.engine import ray_engine
    methods, attributes = _interface()
    assert {"train", "evaluate", "state_dict", "load_state_dict", "resize", "close"} <= set(methods)
    assert {"n_clients", "topology", "time_lost_seconds"} <= set(attributes)
    e = _engine("topology.name=ring")
    for cls in (LocalEngine, ray_engine.RayEngine):
        assert all(callable(getattr(cls, m, None)) for m in methods), cls
    assert all(hasattr(e, a) for a in attributes)
    source = inspect.getsource(ray_engine.RayEngine)
    assert all(f"self.{a} = " in source for a in attributes)
