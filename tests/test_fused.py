"""Fused rounds: many rounds per ClientActor call, payload rows through shared memory.

The plans against Exchange.mix (pure), the mailbox across real processes (rows, slot reuse
under skew, a killed peer, an aborting peer, files unlinked), and on Ray: fused runs equal
one-call-per-round runs and the local engine bit for bit, and a rule's error surfaces as itself.
"""
import multiprocessing as mp
import os
import random
import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qgm_ray.engine import fused, mailbox
from qgm_ray.engine.base import block_mix, groups_of
from qgm_ray.engine.exchange import Exchange
from qgm_ray.topology import make_topology

from helpers import quiet, small_run


# ------------------------------------------------------------------ plans (pure)

@pytest.mark.parametrize("name,n,k,kw", [
    ("ring", 6, 2, {}), ("ring", 7, 3, {}), ("torus", 9, 4, {}), ("expander", 11, 3, {}), ("ring_ext", 8, 3, {}),
    ("social", 32, 5, {"graph": "davis_southern_women"}), ("ring", 4, 4, {}),
])
def test_mixing_through_the_plans_equals_the_exchange(name, n, k, kw):
    topo = make_topology(name, n, **kw)
    D = 5
    ex = Exchange(topo, False, groups_of(n, k), D)
    gen = torch.Generator().manual_seed(n * 10 + k)
    payloads = [torch.randn(len(g), D, generator=gen) for g in ex.groups]
    expected = ex.mix(0, payloads)
    plans = fused.plans(ex, 0)
    # What each actor's outbox holds: its exported rows, in its plan's order.
    outboxes = [p[plan["export"]] for p, plan in zip(payloads, plans)]
    for b, plan in enumerate(plans):
        received = [outboxes[a][r] for a, r in plan["at"]]
        got = block_mix(payloads[b], ex.groups[b], plan["rows"], plan["sources"], received)
        assert torch.equal(got, expected[b])
        assert plan["width"] == D
        # readers are exactly the blocks whose `at` names this block
        assert plan["readers"] == sorted({c for c, other in enumerate(plans) if any(a == b for a, _ in other["at"])})
    if len(ex.groups) == 1:
        assert plans[0]["at"] == [] and plans[0]["export"] == [] and plans[0]["readers"] == []


def _ex(**kw):
    base = {"schedule": None, "all_reduce": False, "barriers": []}
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("setting,ex,topo,compressed,nodes,expected", [
    ("auto", _ex(), SimpleNamespace(time_varying=False), False, ["a", "a"], True),
    (8, _ex(), SimpleNamespace(time_varying=False), False, ["a"], True),
    (1, _ex(), SimpleNamespace(time_varying=False), False, ["a", "a"], False),
    ("auto", _ex(schedule=object()), SimpleNamespace(time_varying=False), False, ["a"], False),
    ("auto", _ex(all_reduce=True), SimpleNamespace(time_varying=False), False, ["a"], False),
    ("auto", _ex(barriers=[object()]), SimpleNamespace(time_varying=False), False, ["a"], False),
    ("auto", _ex(), SimpleNamespace(time_varying=True), False, ["a"], False),
    ("auto", _ex(), SimpleNamespace(time_varying=False), True, ["a"], False),
    ("auto", _ex(), SimpleNamespace(time_varying=False), False, ["a", "b"], False),
], ids=["auto", "fixed", "one", "async", "all_reduce", "barriers", "time_varying", "compressed", "two_nodes"])
def test_fusable(setting, ex, topo, compressed, nodes, expected):
    assert fused.fusable(setting, ex, topo, compressed, nodes) is expected


def test_rounds_per_call_aims_at_the_target_call_length():
    auto = fused.RoundsPerCall("auto")
    assert auto.size == fused.FIRST_CALL_ROUNDS
    auto.observe(4, 0.02)   # 5 ms a round
    assert auto.size == round(fused.TARGET_CALL_SECONDS / 0.005)
    auto.observe(10, 100.0)   # a slow model: one round a call
    assert auto.size == 1
    auto.observe(10, 1e-9)
    assert auto.size == fused.MAX_ROUNDS_PER_CALL
    fixed = fused.RoundsPerCall(6)
    fixed.observe(6, 60.0)
    assert fixed.size == 6


# ------------------------------------------------------------------ the mailbox across processes

def _value(t, actor, row, width):
    return np.arange(width, dtype=np.float32) + 1000 * t + 100 * actor + 10 * row


def _member(prefix, me, n_actors, rounds, width, start, go, results, seed, die_at=None, abort_at=None):
    """Actor `me` of a ring of actors, each exporting 2 rows to both neighbours. `go`: a
    barrier of all of them, passed once every outbox is made and once every actor attached."""
    left, right = (me - 1) % n_actors, (me + 1) % n_actors
    box = mailbox.Mailbox(prefix, me, 2, width, sorted({left, right}), sorted({left, right}), start)
    go.wait()
    rng = random.Random(seed)
    box.attach()
    go.wait()
    box.unlink()
    try:
        for t in range(start, start + rounds):
            time.sleep(rng.random() * 0.004)   # skew: some actors run ahead
            if t == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if t == abort_at:
                box.abort()
                results.put((me, "aborted"))
                return
            box.publish(t, np.stack([_value(t, me, r, width) for r in range(2)]))
            got = box.received(t, [(left, 1), (right, 0)])
            ok = np.array_equal(got[0], _value(t, left, 1, width)) and np.array_equal(got[1], _value(t, right, 0, width))
            box.consumed(t)
            if not ok:
                results.put((me, f"wrong rows in round {t}"))
                return
        results.put((me, "ok"))
    except mailbox.PeerLost as e:
        results.put((me, f"lost: {e}"))
    finally:
        box.close()


def _ring(tmp_path, n_actors, rounds, **kw):
    ctx = mp.get_context("fork")
    prefix = str(tmp_path / "box")
    go, results = ctx.Barrier(n_actors), ctx.Queue()
    procs = []
    for me in range(n_actors):
        extra = {key: v for key, v in kw.items() if key in ("die_at", "abort_at") and me == 0}
        procs.append(ctx.Process(target=_member, args=(prefix, me, n_actors, rounds, 6, 10, go, results, me),
                                 kwargs=extra))
    for p in procs:
        p.start()
    out = {}
    deadline = time.time() + 30
    while len(out) < n_actors - (1 if "die_at" in kw else 0) and time.time() < deadline:
        try:
            me, status = results.get(timeout=1)
            out[me] = status
        except Exception:  # noqa: BLE001 - queue.Empty: keep waiting until the deadline
            pass
    for p in procs:
        p.join(timeout=10)
    return out, prefix


def test_rows_cross_processes_exactly_under_skew(tmp_path):
    out, prefix = _ring(tmp_path, 3, rounds=60)
    assert out == {0: "ok", 1: "ok", 2: "ok"}
    assert not [f for f in os.listdir(tmp_path) if f.startswith("box")]   # unlinked once everyone attached


def test_a_killed_peer_is_found_by_its_waiting_neighbours(tmp_path):
    out, _ = _ring(tmp_path, 3, rounds=40, die_at=15)
    assert set(out) == {1, 2}
    assert all(s.startswith("lost: ") for s in out.values()), out
    assert any(s.startswith("lost: the process of ClientActor 0 (pid ") for s in out.values()), out


def _make_and_die(prefix):
    box = mailbox.Mailbox(prefix, 0, 1, 4, [1], [1], 0)   # noqa: F841 - held open until the kill
    os.kill(os.getpid(), signal.SIGKILL)   # as a run killed whole: nothing closes


def test_outboxes_of_gone_processes_are_swept_when_the_next_is_made(tmp_path):
    """A run killed whole between making its outboxes and unlinking them leaves their names;
    the next outbox made on the node removes those whose owner is gone, and only those."""
    ctx = mp.get_context("fork")
    child = ctx.Process(target=_make_and_die, args=(str(tmp_path / "qgm-00000000000000aa"),))
    child.start()
    child.join()
    mine = mailbox.Mailbox(str(tmp_path / "qgm-00000000000000bb"), 0, 1, 4, [1], [1], 0)
    (tmp_path / "qgm-00000000000000cc-0.rows").write_bytes(b"")   # being made: no owner yet
    (tmp_path / "notes.txt").write_text("not an outbox")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "qgm-00000000000000aa-0.fifo", "qgm-00000000000000aa-0.rows",
                                            "qgm-00000000000000bb-0.fifo", "qgm-00000000000000bb-0.rows",
                                            "qgm-00000000000000cc-0.rows"]
    assert mailbox.sweep(str(tmp_path)) == ["qgm-00000000000000aa-0.rows"]
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "qgm-00000000000000bb-0.fifo", "qgm-00000000000000bb-0.rows",
                                            "qgm-00000000000000cc-0.rows"]
    mine.close()


def test_a_peer_that_ends_between_making_and_attaching_is_a_lost_peer(tmp_path):
    """A peer whose process ends after it made its outbox (a lost node's worker exiting closes
    its outbox, which removes its peers' names too) makes the attach raise PeerLost, which the
    coordinator reads past to the lost actor's own error, not an OSError that fails the run."""
    prefix = str(tmp_path / "qgm-00000000000000dd")
    boxes = [mailbox.Mailbox(prefix, me, 1, 4, [1 - me], [1 - me], 0) for me in (0, 1)]
    boxes[1].close()
    with pytest.raises(mailbox.PeerLost, match="actor 1's outbox is gone before the chunk began"):
        boxes[0].attach()
    boxes[0].close()
    assert os.listdir(tmp_path) == []


def test_an_aborting_peer_stops_its_neighbours(tmp_path):
    out, _ = _ring(tmp_path, 3, rounds=40, abort_at=12)
    assert out[0] == "aborted"
    # each stops: on the abort notice, or on the closed FIFO of a neighbour that stopped first
    assert out[1].startswith("lost: ") and out[2].startswith("lost: "), out
    assert "lost: ClientActor 0's call failed" in out.values(), out


# ------------------------------------------------------------------ ClientActors in threads, no Ray

def _actors(cfg):
    from qgm_ray.engine.actors import ClientActor, dataset_meta
    from qgm_ray.runner import run as runner

    ds, parts = runner.prepare(cfg, log=quiet)
    arrays = [np.ascontiguousarray(t.numpy()) for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y)]
    groups = groups_of(cfg.topology.n_clients, cfg.ray.clients_per_actor)
    actors = [ClientActor(cfg, dataset_meta(ds), [np.asarray(p) for p in parts], 0, *arrays) for _ in groups]
    for actor, g in zip(actors, groups):
        actor.set_clients(g, g)
    return ds, parts, actors, groups


def test_client_actors_in_threads_equal_the_local_engine(tmp_path):
    """ClientActor.rounds as the Ray engine runs it (every actor's outbox opened, then calls of
    several rounds each, side by side), here as threads of one process: the local engine's bits."""
    import threading

    from qgm_ray import build
    from qgm_ray.config import load_config
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.engine.stage import exchange_stage

    cfg = load_config(None, small_run("topology.n_clients=7", "ray.clients_per_actor=3", "backend=local"))
    ds, parts, actors, groups = _actors(cfg)
    block = actors[0].block
    ex = exchange_stage(cfg, block.algorithm, build.build_topology(cfg, 7), groups, block.payload_size, len(ds.train_x))
    lrs = [0.05] * 4 + [0.02] * 5
    for b, (actor, plan) in enumerate(zip(actors, fused.plans(ex, 0))):
        assert actor.open_mailbox(str(tmp_path / "box"), b, plan, 0) is None
    for actor in actors:
        actor.attach_mailbox()
    for actor in actors:
        actor.unlink_mailbox()
    losses: dict = {}

    def run(b):
        losses[b] = actors[b].rounds(0, lrs[:4]) + actors[b].rounds(4, lrs[4:])
    threads = [threading.Thread(target=run, args=(b,)) for b in range(len(actors))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    local = LocalEngine(cfg, ds, parts)
    records = local.train(range(0, 9), lambda t: lrs[t])
    got = [float(np.mean([x for b in range(len(actors)) for x in losses[b][t]])) for t in range(9)]
    assert got == [r.loss for r in records]
    want = torch.stack([c["params"] for c in local.state_dict()["clients"]])
    assert torch.equal(torch.cat([a.block.params for a in actors]), want)
    assert not list(tmp_path.iterdir())   # unlinked once every peer opened them


def test_no_room_in_shared_memory_is_a_reason_not_a_crash(tmp_path):
    """An outbox the node's shared memory cannot hold is refused when it is made (its pages are
    reserved up front), with nothing left behind: the coordinator then runs a call per round."""
    from qgm_ray.config import load_config

    cfg = load_config(None, small_run("backend=local", "topology.n_clients=4", "ray.clients_per_actor=2"))
    _, _, actors, _ = _actors(cfg)
    plan = {"rows": [], "sources": [], "at": [(1, 0)], "export": [0], "readers": [1], "width": 1 << 44}
    why = actors[0].open_mailbox(str(tmp_path / "box"), 0, plan, 0)
    assert why.startswith(f"{tmp_path}: ") and actors[0].fused is None
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ on Ray

ray = pytest.importorskip("ray")

BASE = small_run("topology.n_clients=6", "backend=ray", "schedule.epochs=1")


def _train(engine):
    records = engine.train(range(0, 5), lambda t: 0.05) + engine.train(range(5, 11), lambda t: 0.02)
    params = torch.stack([c["params"] for c in engine.state_dict()["clients"]])
    return [r.loss for r in records], [r.bytes_sent for r in records], params


@pytest.mark.ray
@pytest.mark.parametrize("extra", [
    ["topology.name=ring", "ray.clients_per_actor=2"],
    ["topology.name=ring_ext", "ray.clients_per_actor=4", "algorithm.name=d2"],
], ids=["ring-3-actors", "ring_ext-2-uneven-actors-d2"])
def test_fused_rounds_equal_per_round_calls_and_the_local_engine(ray_session, extra):
    from qgm_ray.config import load_config
    from qgm_ray.engine.local import LocalEngine
    from qgm_ray.engine.ray_engine import RayEngine
    from qgm_ray.runner import run as runner

    out = {}
    for name, more in (("local", ["backend=local"]), ("fused", ["ray.rounds_per_call=3"]),
                       ("per_round", ["ray.rounds_per_call=1"])):
        cfg = load_config(None, BASE + extra + more)
        ds, parts = runner.prepare(cfg, log=quiet)
        engine = LocalEngine(cfg, ds, parts) if name == "local" else RayEngine(cfg, ds, parts, log=quiet)
        try:
            if name != "local":
                assert engine._info["fused"] is (name == "fused")
            out[name] = _train(engine)
        finally:
            engine.close()
    for name in ("fused", "per_round"):
        assert out[name][0] == out["local"][0]
        assert out[name][1] == out["local"][1]
        assert torch.equal(out[name][2], out["local"][2])


def _outboxes_of(pids) -> list[str]:
    """Outbox files in the shared-memory directory whose owner is one of these processes."""
    out = []
    for name in os.listdir(mailbox.shm_dir()):
        if name.startswith("qgm-") and name.endswith(".rows"):
            try:
                pid = int(np.fromfile(os.path.join(mailbox.shm_dir(), name), dtype=np.int64, count=1)[0])
            except (OSError, IndexError):
                continue   # removed meanwhile, or another test's outbox being made
            if pid in pids:
                out.append(name)
    return out


@pytest.mark.ray
def test_an_actor_killed_during_fused_rounds_leaves_no_outbox(ray_session):
    """A ClientActor killed at any point of a fused chunk (making, opening or unlinking the
    outboxes, or mid-round) is a failure the engine reports, and no outbox of the run's actors
    is left in shared memory."""
    import threading

    from qgm_ray.config import load_config
    from qgm_ray.engine.base import EngineFailure
    from qgm_ray.engine.ray_engine import RayEngine
    from qgm_ray.runner import run as runner

    cfg = load_config(None, BASE + ["ray.clients_per_actor=2", "ray.rounds_per_call=2"])
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = RayEngine(cfg, ds, parts, log=quiet)
    try:
        pids = set(engine.actor_pids())
        engine.train(range(0, 4), lambda t: 0.05)
        threading.Timer(0.3, os.kill, [sorted(pids)[1], signal.SIGKILL]).start()
        with pytest.raises(EngineFailure):
            for c in range(200):   # short chunks: the kill lands in one, at whatever phase
                engine.train(range(4 + 5 * c, 9 + 5 * c), lambda t: 0.05)
    finally:
        engine.close()
    assert _outboxes_of(pids) == []


@pytest.mark.ray
def test_a_rule_error_in_fused_rounds_surfaces_as_itself(ray_session):
    from qgm_ray.config import load_config
    from qgm_ray.engine.ray_engine import RayEngine
    from qgm_ray.runner import run as runner

    cfg = load_config(None, BASE + ["ray.clients_per_actor=2", "ray.rounds_per_call=4"])
    ds, parts = runner.prepare(cfg, log=quiet)
    engine = RayEngine(cfg, ds, parts, log=quiet)
    try:
        assert engine._info["fused"]
        pids = set(engine.actor_pids())
        # QG momentum refuses a negative learning rate in its post-mix (algorithms/sgd.py)
        with pytest.raises(ValueError, match="qg momentum needs lr >= 0"):
            engine.train(range(0, 8), lambda t: -1.0 if t == 5 else 0.05)
    finally:
        engine.close()
    assert _outboxes_of(pids) == []
