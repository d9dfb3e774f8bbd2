"""The recovery policy (qgm_ray/runner/recovery.py): retry or fail, and who counts restarts. Pure:
no engine, no Ray."""
from qgm_ray.engine.base import EngineFailure
from qgm_ray.runner.recovery import GIVE_UP, RAISE, RETRY, RecoveryPolicy

HINT = "python main.py --resume runs/x"
LOST = EngineFailure("ClientActor(s) [0] died (node lost)")


def test_failures_are_retried_until_the_budget_is_spent_then_the_run_fails_resumably():
    policy = RecoveryPolicy(max_restarts=2, resume_hint=HINT)
    restarts, actions = 0, []
    for _ in range(3):
        d = policy.decide(LOST, restarts, at_round=17, restore_round=10)
        restarts = d.restarts
        actions.append((d.action, d.restarts, d.message))
    assert actions[:2] == [(RETRY, 1, "restart 1 of 2"), (RETRY, 2, "restart 2 of 2")]
    action, count, message = actions[2]
    assert action == GIVE_UP and count == 3
    assert message == ("ClientActor(s) [0] died (node lost); gave up after fault_tolerance.max_restarts=2 restarts "
                       "at round 17; the checkpoint of round 10 is kept: resume with python main.py --resume runs/x "
                       "(or raise fault_tolerance.max_restarts)")


def test_the_budget_is_per_process_while_the_record_counts_over_the_run():
    resumed = RecoveryPolicy(max_restarts=2, resume_hint=HINT, restarts_at_open=5)   # the run restarted 5 times before
    d = resumed.decide(LOST, 5, at_round=40, restore_round=30)
    assert (d.action, d.restarts, d.message) == (RETRY, 6, "restart 1 of 2")
    assert resumed.decide(LOST, 7, at_round=40, restore_round=30).action == GIVE_UP


def test_no_budget_gives_up_at_the_first_failure_and_says_when_nothing_is_kept():
    d = RecoveryPolicy(max_restarts=0, resume_hint=HINT).decide(LOST, 0, at_round=3, restore_round=None)
    assert d.action == GIVE_UP and d.restarts == 1
    assert "at round 3; no checkpoint was written: resume with" in d.message and "\n" not in d.message


def test_only_an_engine_failure_with_a_restore_point_is_retried():
    policy = RecoveryPolicy(max_restarts=3, resume_hint=HINT)
    bug = ValueError("a bug, not a lost node")
    d = policy.decide(bug, 1, at_round=5, restore_round=0)
    assert (d.action, d.restarts, d.message) == (RAISE, 1, "ValueError: a bug, not a lost node")   # not counted
    d = policy.decide(LOST, 1, at_round=5, restore_round=None)
    assert (d.action, d.restarts) == (RAISE, 2)   # nothing to restore: the failure is the outcome
