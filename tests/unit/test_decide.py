"""Retries, backoff and failure of stage Jobs."""

from selftaught.api.load import parse_run
from selftaught.controller.decide import JobView, decide, job_view, parse_termination_message
from selftaught.pipeline.planner import plan
from selftaught.pipeline.table import StageRef

from .test_spec import MINIMAL

NOW = 1_000_000.0


def _spec(**spec):
    return parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "retries": {"perStage": 2, "backoffSeconds": 10}, **spec}}).spec


def _fresh(spec):
    return plan(spec, frozenset())


def failed(attempt, at=NOW - 1000, permanent=False, reason="StageFailed", message="boom"):
    return JobView(f"r-categorize-{attempt}", "categorize", attempt, "failed", at, reason, message, permanent)


def test_a_ready_stage_without_a_job_gets_its_first_attempt():
    assert decide(_spec(), _fresh(_spec()), [], {}, NOW, suspended=False).create == [(StageRef("categorize"), 0)]


def test_a_running_job_is_waited_for_and_nothing_is_created_twice():
    running = JobView("r-categorize-0", "categorize", 0, "active")
    decision = decide(_spec(), _fresh(_spec()), [running], {}, NOW, suspended=False)
    assert decision.create == [] and decision.running == [(StageRef("categorize"), running)]


def test_a_failed_job_is_retried_as_a_new_attempt_after_an_exponential_backoff():
    spec = _spec()
    soon = decide(spec, _fresh(spec), [failed(0, at=NOW - 3)], {}, NOW, suspended=False)
    assert soon.create == [] and soon.requeue_after == 7
    later = decide(spec, _fresh(spec), [failed(0), failed(1, at=NOW - 15)], {}, NOW, suspended=False)
    assert later.create == [] and later.requeue_after == 5  # second retry waits 20 s
    assert decide(spec, _fresh(spec), [failed(0), failed(1)], {}, NOW, suspended=False).create == [(StageRef("categorize"), 2)]


def test_when_retries_are_spent_the_run_fails_with_the_last_reason():
    spec = _spec()
    decision = decide(spec, _fresh(spec), [failed(0), failed(1), failed(2, reason="StorageUnavailable")], {}, NOW, suspended=False)
    assert decision.failure == ("StorageUnavailable", "categorize failed 3 times; last error: boom")


def test_a_permanent_failure_fails_the_run_at_once():
    decision = decide(_spec(), _fresh(_spec()), [failed(0, permanent=True, reason="InvalidInput")], {}, NOW, suspended=False)
    assert decision.failure == ("InvalidInput", "categorize: boom") and not decision.create


def test_attempts_counted_in_status_survive_jobs_deleted_by_their_ttl():
    assert decide(_spec(), _fresh(_spec()), [], {"categorize": 2}, NOW, suspended=False).create == [(StageRef("categorize"), 2)]


def test_a_job_that_succeeded_without_a_manifest_counts_as_a_failed_attempt():
    done_without_manifest = JobView("r-categorize-0", "categorize", 0, "succeeded", NOW - 100)
    decision = decide(_spec(), _fresh(_spec()), [done_without_manifest], {}, NOW, suspended=False)
    assert decision.create == [(StageRef("categorize"), 1)] and decision.retries == {"categorize": 1}


def test_a_suspended_run_starts_nothing_new():
    assert decide(_spec(), _fresh(_spec()), [], {}, NOW, suspended=True).create == []


def test_job_views_read_state_and_the_stage_termination_message():
    job = {
        "metadata": {"name": "r-judge-1-0", "uid": "u", "labels": {"selftaught.dev/stage": "judge-1", "selftaught.dev/attempt": "0"}},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "lastTransitionTime": "2026-11-28T10:00:00Z"}]},
    }
    message = parse_termination_message('{"reason": "NoTrainingData", "message": "nothing kept", "permanent": true}')
    view = job_view(job, message)
    assert (view.stage, view.state, view.reason, view.message, view.permanent) == ("judge-1", "failed", "NoTrainingData", "nothing kept", True)
    assert parse_termination_message("Traceback ...\nCUDA out of memory")["reason"] == "StageCrashed"
