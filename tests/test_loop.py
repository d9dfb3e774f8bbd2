"""The straight loop (qgm_ray/runner/loop.py) with a fake engine and fake parts: what a run
records, evaluates, resizes and checkpoints, with no files, no torch and no Ray."""
import copy
import math

import pytest

from qgm_ray.engine.base import RoundRecord
from qgm_ray.runner import loop
from qgm_ray.runner.plan import RunPlan, RunState


class FakeEngine:
    """Round t: loss 1/(t+1), 10 (t+1) bytes, t of them across nodes; accuracy grows, then dips."""
    time_lost_seconds = 0.0

    def __init__(self, n_clients=4, losses=None):
        self.n_clients, self.losses, self.t, self.resized = n_clients, losses or {}, 0, []

    def train(self, rounds, lr_of, on_round=None, should_stop=None):
        assert rounds.start == self.t, "the loop asks for the rounds after the engine's state"
        done = []
        for t in rounds:
            if should_stop is not None and should_stop():
                break
            rec = RoundRecord(t, self.losses.get(t, 1.0 / (t + 1)), 10 * (t + 1), t)
            done.append(rec)
            self.t = t + 1
            if on_round is not None:
                on_round(rec)
        return done

    def evaluate(self):
        acc = [0.3, 0.5, 0.7, 0.6][min(self.t // 5 - 1, 3)]
        return {"test_accuracy": acc, "local_test_accuracy": acc / 2, "consensus_distance": 1.0 / self.t,
                "test_loss": 2.0 - acc}

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, state):
        self.t = state["t"]

    def resize(self, n_clients, at_round):
        self.resized.append((n_clients, at_round))
        self.n_clients = n_clients

    def close(self):
        pass


class FakeParts:
    def __init__(self, state_of, stop_after=None):
        self.rows, self.saved, self.rounds, self.logs = [], [], [], []
        self.state_of, self.stop_after = state_of, stop_after

    def record(self, row):
        self.rows.append(row)

    def checkpoint(self):
        s = self.state_of()
        s.last_checkpoint = s.round
        self.saved.append(copy.deepcopy(s))

    def clock(self):
        return 1.5

    def should_stop(self):
        return self.stop_after is not None and len(self.rounds) >= self.stop_after

    def on_round(self, record):
        self.rounds.append(record.round)

    def log(self, msg):
        self.logs.append(msg)


def lr(t):
    return 0.1 / (1 + t)


def plan(**kw):
    args = dict(rounds_per_epoch=5, total_rounds=20, eval_every=5, lr=lr, resize_at={}, checkpoint_every=0)
    return RunPlan(**{**args, **kw})


def drive(p, state=None, engine=None, stop_after=None):
    state = state or RunState()
    engine = engine or FakeEngine()
    parts = FakeParts(lambda: state, stop_after)
    loop.train_to_end(state, p, engine, parts)
    return state, engine, parts


def test_every_row_is_the_rounds_bytes_and_losses_since_the_last_evaluation():
    state, engine, parts = drive(plan())
    assert [r["round"] for r in parts.rows] == [5, 10, 15, 20]
    assert parts.rounds == list(range(20))   # every round reported once, in order
    for row in parts.rows:
        t = row["round"]
        assert row["epoch"] == t / 5 and row["lr"] == lr(t - 1)
        assert row["train_loss"] == sum(1.0 / (u + 1) for u in range(t - 5, t)) / 5
        assert row["bytes_sent"] == sum(10 * (u + 1) for u in range(t))           # the engine's counts, added up
        assert row["bytes_cross_node"] == sum(range(t))
        assert row["wall_seconds"] == 1.5 and row["n_clients"] == 4
    assert [r["test_accuracy"] for r in parts.rows] == [0.3, 0.5, 0.7, 0.6]
    assert state.status == "completed" and state.round == 20 and state.pending_losses == []
    assert state.final_test_accuracy == 0.6 and state.best_test_accuracy == 0.7   # kept in the record
    assert [s.round for s in parts.saved] == [20] and parts.saved[0].status == "completed"


def test_periodic_checkpoints_and_a_run_resumed_from_one_write_the_same_rows():
    p = plan(checkpoint_every=7)
    _, _, whole = drive(p)
    assert [s.round for s in whole.saved] == [7, 14, 20]
    restore = whole.saved[1]   # round 14: between two evaluations, with losses pending
    assert restore.round == 14 and len(restore.pending_losses) == 4
    assert restore.final_test_accuracy == 0.5 and restore.best_test_accuracy == 0.5
    resumed_state = restore.restored()
    engine = FakeEngine()
    engine.load_state_dict({"t": restore.round})   # what the runner restores with the record
    final, _, resumed = drive(p, resumed_state, engine)
    assert resumed.rows == [r for r in whole.rows if r["round"] > 14]
    assert final == whole.saved[-1]   # the same record at the end, accuracies included


def test_a_stop_signal_ends_the_loop_at_the_round_the_engine_stopped_at():
    state = RunState()
    engine = FakeEngine()
    parts = FakeParts(lambda: state, stop_after=7)
    with pytest.raises(loop.Stopped):
        loop.train_to_end(state, plan(), engine, parts)
    assert state.round == 7 and engine.t == 7
    assert [r["round"] for r in parts.rows] == [5]
    assert state.pending_losses == [1.0 / 6, 1.0 / 7]   # rounds 5 and 6, for the next row
    assert state.bytes_sent == sum(10 * (u + 1) for u in range(7))
    assert parts.saved == []   # the runner checkpoints a stop, not the loop


def test_a_diverging_chunk_ends_the_run_with_one_line_and_no_row():
    state, _, parts = drive(plan(), engine=FakeEngine(losses={7: math.nan}))
    assert state.status == "diverged" and state.round == 10
    assert state.message.startswith("training diverged at round 10: train loss nan") and "algorithm.lr" in state.message
    assert [r["round"] for r in parts.rows] == [5] and parts.saved == []
    state, _, _ = drive(plan(), engine=FakeEngine(losses={12: 1e4}))
    assert state.status == "diverged" and "> 1000" in state.message


def test_an_elastic_resize_happens_after_the_rounds_before_it():
    state, engine, parts = drive(plan(resize_at={10: 6, 20: 8}))
    assert engine.resized == [(6, 10)]   # never after the last round
    assert [r["n_clients"] for r in parts.rows] == [4, 4, 6, 6]
    assert parts.logs == ["elastic: round 10: 4 -> 6 clients"]
    assert state.status == "completed"


def test_the_plan_stops_where_the_loop_must_regain_control():
    p = plan(total_rounds=23, resize_at={12: 2}, checkpoint_every=8)
    assert p.stops(0) == [5, 8, 10, 12, 15, 16, 20, 23]
    assert p.stops(16) == [20, 23]
    assert p.evaluates_at(23) and not p.evaluates_at(12)
    assert p.resize_to(12) == 2 and p.resize_to(23) is None
    assert p.checkpoints_at(16, 8) and not p.checkpoints_at(16, 10) and not p.checkpoints_at(23, 0)
