"""Retries, backoff, startup timeouts and failures of stage Jobs: the pure decision."""

from selftaught.api.load import parse_run
from selftaught.controller.decide import FailedAttempt, JobView, Waiting, decide, job_view, parse_termination_message
from selftaught.errors import Failure, Reason
from selftaught.pipeline.planner import plan
from selftaught.pipeline.table import StageRef

from .test_spec import MINIMAL

NOW = 1_000_000.0
CATEGORIZE = StageRef("categorize")


def _spec(**spec):
    return parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "retries": {"perStage": 2, "backoffSeconds": 10}, **spec}}).spec


def _decide(jobs=(), attempts=None, failures=None, spec=None, **kwargs):
    spec = spec or _spec()
    kwargs.setdefault("suspended", False)
    return decide(spec, plan(spec, frozenset()), list(jobs), attempts or {}, failures or {}, NOW, **kwargs)


def failed(attempt, at=NOW - 1000, permanent=False, reason="StageFailed", message="boom"):
    return JobView(f"r-categorize-{attempt}", "categorize", attempt, "failed", at, Failure(reason, message, permanent))


def running(attempt=0, waiting=None, started_at=NOW - 10):
    return JobView(f"r-categorize-{attempt}", "categorize", attempt, "active", started_at=started_at, waiting=waiting)


def test_a_ready_stage_without_a_job_gets_its_first_attempt_counted_at_creation():
    decision = _decide()
    assert decision.create == [(CATEGORIZE, 0)] and decision.attempts == {"categorize": 1} and decision.created_at == {"categorize": NOW}


def test_a_running_job_is_waited_for_and_nothing_is_created_twice():
    decision = _decide([running()], {"categorize": 1})
    assert decision.create == [] and decision.running == [(CATEGORIZE, running())]


def test_a_failed_job_is_retried_as_a_new_attempt_after_an_exponential_backoff():
    soon = _decide([failed(0, at=NOW - 3)], {"categorize": 1})
    assert soon.create == [] and soon.requeue_after == 7
    later = _decide([failed(0), failed(1, at=NOW - 15)], {"categorize": 2})
    assert later.create == [] and later.requeue_after == 5  # second retry waits 20 s
    assert _decide([failed(0), failed(1)], {"categorize": 2}).create == [(CATEGORIZE, 2)]


def test_when_retries_are_spent_the_run_fails_with_the_last_reason():
    decision = _decide([failed(0), failed(1), failed(2, reason="StorageUnavailable")], {"categorize": 3})
    assert decision.failure == Failure(Reason.STORAGE_UNAVAILABLE, "categorize failed 3 times; last error: boom")


def test_a_permanent_failure_fails_the_run_at_once_until_the_spec_is_edited():
    jobs = [failed(0, permanent=True, reason="InvalidInput")]
    decision = _decide(jobs, {"categorize": 1}, generation=1)
    assert decision.failure == Failure(Reason.INVALID_INPUT, "categorize: boom", True) and not decision.create
    recorded = {"categorize": decision.failures["categorize"]}
    edited = _decide(jobs, {"categorize": 1}, recorded, generation=2)  # e.g. a fixed scheduling override
    assert edited.failure is None and edited.create == [(CATEGORIZE, 1)]


def test_a_job_deleted_before_it_finished_counts_as_a_failed_attempt_so_retries_stay_bounded():
    gone = _decide([], {"categorize": 1}, created_at={"categorize": NOW - 3600})  # TTL, someone, or while we were down
    assert gone.vanished == [(CATEGORIZE, 0)] and gone.failures["categorize"].failure.reason == "JobDeleted"
    assert gone.create == [] and gone.backoff  # retried after the backoff, as attempt 1
    spent = _decide([], {"categorize": 3}, {"categorize": FailedAttempt(1, Failure(Reason.JOB_DELETED, ""), NOW - 3600)}, created_at={"categorize": NOW - 3600})
    assert spent.failure is not None and spent.failure.reason == "JobDeleted"  # never recreated forever


def test_a_job_just_created_but_not_yet_seen_is_not_mistaken_for_a_deleted_one():
    decision = _decide([], {"categorize": 1}, created_at={"categorize": NOW - 2})
    assert decision.vanished == [] and decision.create == [] and decision.requeue_after == 5


def test_pods_that_cannot_start_fail_the_attempt_after_the_startup_timeout_with_their_reason():
    pulling = Waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/x:typo"')
    early = _decide([running(waiting=pulling, started_at=NOW - 60)], {"categorize": 1}, startup_timeout=lambda ref: 600)
    assert early.running and not early.expire and 1 <= early.requeue_after <= 30
    late = _decide([running(waiting=pulling, started_at=NOW - 601)], {"categorize": 1}, startup_timeout=lambda ref: 600)
    assert [view.name for _, view in late.expire] == ["r-categorize-0"]
    failure = late.failures["categorize"].failure
    assert failure.reason == "ImagePullBackOff" and "did not start within 600s" in failure.message and "typo" in failure.message


def test_time_queued_in_kueue_does_not_count_toward_the_startup_timeout():
    queued = Waiting("Queued", "held by Kueue in queue gpu", queued=True)
    decision = _decide([running(waiting=queued, started_at=None)], {"categorize": 1}, startup_timeout=lambda ref: 1)
    assert decision.running and not decision.expire


def test_a_disrupted_attempt_spends_no_retry():
    evicted = failed(0, reason=Reason.DISRUPTED, message="pod r-categorize-0-0 was disrupted (PreemptionByScheduler)")
    decision = _decide([evicted], {"categorize": 1}, spec=_spec(retries={"perStage": 0, "backoffSeconds": 10}))
    assert decision.failure is None and decision.create == [(CATEGORIZE, 1)] and decision.disrupted_attempts == {"categorize": 1}


def test_a_job_that_succeeded_without_a_manifest_counts_as_a_failed_attempt():
    done_without_manifest = JobView("r-categorize-0", "categorize", 0, "succeeded", NOW - 100)
    decision = _decide([done_without_manifest], {"categorize": 1})
    assert decision.create == [(CATEGORIZE, 1)] and decision.failures["categorize"].failure.reason == "NoManifest"


def test_a_suspended_run_starts_nothing_new():
    assert _decide(suspended=True).create == []


def test_job_views_read_state_and_the_stage_termination_message():
    job = {
        "metadata": {"name": "r-judge-1-0", "uid": "u", "labels": {"selftaught.dev/stage": "judge-1", "selftaught.dev/attempt": "0"}},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "lastTransitionTime": "2026-11-28T10:00:00Z"}]},
    }
    message = parse_termination_message('{"reason": "NoTrainingData", "message": "nothing kept", "permanent": true}')
    view = job_view(job, message)
    assert (view.stage, view.state, view.failure) == ("judge-1", "failed", Failure("NoTrainingData", "nothing kept", True))


def test_a_stage_that_died_without_its_own_message_shows_its_exit_code_and_the_end_of_its_log():
    log = "loading model\n" + "x" * 5000 + "\ntorch.OutOfMemoryError: CUDA out of memory"
    crashed = parse_termination_message(log, 1, "Error")
    assert crashed.reason == "StageCrashed" and crashed.message.startswith("exit code 1") and not crashed.permanent
    assert crashed.message.endswith("CUDA out of memory") and len(crashed.message) < 1700
    killed = parse_termination_message(None, 137, "OOMKilled")
    assert killed == Failure("OOMKilled", "exit code 137 (OOMKilled)")
    sigkill = parse_termination_message(None, 137, "Error")  # a liveness probe, a preStop: not the memory limit
    assert sigkill.reason == "StageCrashed" and "SIGKILL" in sigkill.message
    rejected = parse_termination_message(None, None, None, "NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed")
    assert rejected == Failure("NodeAffinity", "pod status NodeAffinity: Pod was rejected: Predicate NodeAffinity failed")
    assert parse_termination_message(None) is None  # nothing said: the Job's own condition tells


def _lost_nodes(count, label="categorize"):
    from selftaught.store.disruptions import Cause, DisruptionRecord

    return {label: [DisruptionRecord(stage=label, cause=Cause.NODE_LOST, at=NOW - 100 * i, pods=[f"p{i}"], gpu_seconds=60.0) for i in range(count)]}


def test_disruptions_up_to_the_cap_let_the_stage_run_on():
    spec = _spec(retries={"perStage": 2, "disruptionsPerStage": 1})
    decision = _decide([running()], {"categorize": 1}, spec=spec, disrupted=_lost_nodes(1))
    assert decision.failure is None and decision.running and not decision.stop


def test_one_disruption_past_the_cap_fails_the_run_and_stops_the_stage_without_spending_a_retry():
    spec = _spec(retries={"perStage": 2, "disruptionsPerStage": 1})
    decision = _decide([running()], {"categorize": 1}, spec=spec, disrupted=_lost_nodes(2), generation=3)
    assert decision.failure is not None and decision.failure.reason == Reason.TOO_MANY_DISRUPTIONS
    assert decision.stop == [(CATEGORIZE, running())] and not decision.create
    assert decision.failures["categorize"].attempt == 0 and decision.disrupted_attempts == {"categorize": 1}
    # a raised cap (an edit: a new generation) resumes the stage with a new attempt, no retry spent
    raised = _spec(retries={"perStage": 0, "backoffSeconds": 0, "disruptionsPerStage": 5})
    resumed = _decide([], decision.attempts, decision.failures, spec=raised, disrupted=_lost_nodes(2), disrupted_attempts=decision.disrupted_attempts, generation=4)
    assert resumed.failure is None and resumed.create == [(CATEGORIZE, 1)] and not resumed.vanished
