"""Disruptions, the pure parts: what a stopped pod was stopped by, what it cost, how disruptions
are counted (once, pods stopped together as one), when the cap fails the run, and how long a
stage's pods may take to save."""

from __future__ import annotations

import pytest

from selftaught.controller.disruptions import (
    GRACE_CAP,
    GRACE_FLOOR,
    PodEnd,
    cause_of,
    counted,
    grace_period,
    newest_save,
    pod_end,
    record_disruption,
    too_many,
)
from selftaught.errors import Failure, Reason, encode
from selftaught.pipeline.scan import scan
from selftaught.pipeline.table import StageRef
from selftaught.store import LocalStore
from selftaught.store.disruptions import Cause, DisruptionRecord, LostWork, lost_work, read_disruption, write_disruption
from selftaught.store.layout import disruption_key
from selftaught.store.progress import ProgressRecord, SavedState

# -- the cost ------------------------------------------------------------------------------------------


def progress(done=300.0, saved=None, started_at=1000.0, working_since=1060.0, updated_at=1900.0, unit="steps"):
    return ProgressRecord(stage="train-1", unit=unit, done=done, total=1000, started_at=started_at, working_since=working_since, updated_at=updated_at, saved=saved)


def test_a_disruption_costs_the_work_since_the_newest_saved_state():
    record = progress(saved=SavedState(done=250, at=1600.0, seconds=12.0))
    assert lost_work(record) == LostWork(seconds=300.0, unit="steps", redone=50.0, saved=True)


def test_without_a_saved_state_it_costs_everything_since_the_work_began_model_load_left_out():
    assert lost_work(progress()) == LostWork(seconds=840.0, unit="steps", redone=300.0, saved=False)


def test_a_stage_that_published_nothing_cost_the_time_it_ran():
    assert lost_work(None, began_at=1000.0, stopped_at=1030.0) == LostWork(seconds=30.0)
    assert lost_work(None) == LostWork(seconds=0.0)


def test_a_successors_progress_tells_only_the_state_it_continued_from():
    """The replacement overwrote the stopped pod's progress: the steps are unknown, the seconds
    run from its saved state to when the stopped one stopped."""
    successor = progress(done=250, started_at=2000.0, working_since=2050.0, updated_at=2060.0, saved=SavedState(done=250, at=1600.0))
    assert lost_work(successor, began_at=1000.0, stopped_at=1900.0) == LostWork(seconds=300.0, unit="steps", redone=None, saved=True)


def test_the_record_format_round_trips_through_the_store_and_the_scan_finds_it(tmp_path):
    store = LocalStore(tmp_path)
    record = DisruptionRecord(stage="judge-1", cause=Cause.NODE_LOST, reason="DeletionByTaintManager", at=1900.0, pods=["r-judge-1-0-2-abcde"], shards=[2], unit="samples", redone=120, seconds=300, gpus=2, gpu_seconds=600)
    key = disruption_key("iter-001/judge", "r-judge-1-0-2-abcde")
    write_disruption(store, key, record)
    assert read_disruption(store, key) == record
    assert scan(store).disruption_keys == {StageRef("judge", 1): [key]}
    store.write_bytes(key, b"{not json")
    assert read_disruption(store, key) is None  # a hint, never an error


# -- what stopped a pod ---------------------------------------------------------------------------------


def pod(phase="Failed", condition=None, status_reason=None, message=None, deleting=False, index="2", finished=True):
    labels = {"selftaught.dev/run": "r", "selftaught.dev/stage": "judge-1", "batch.kubernetes.io/job-name": "r-judge-1-0"}
    status = {"phase": phase, "startTime": "2026-12-06T10:00:00Z", "conditions": []}
    if condition:
        status["conditions"].append({"type": "DisruptionTarget", "status": "True", "reason": condition, "message": "Taint manager: deleting", "lastTransitionTime": "2026-12-06T10:15:00Z"})
    if status_reason:
        status["reason"] = status_reason
    state = {"terminated": {"exitCode": 1, "startedAt": "2026-12-06T10:00:05Z", "finishedAt": "2026-12-06T10:15:20Z", **({"message": message} if message else {})}}
    status["containerStatuses"] = [{"name": "stage", "state": state if finished else {"running": {"startedAt": "2026-12-06T10:00:05Z"}}}]
    meta = {"name": "r-judge-1-0-2-abcde", "labels": labels, "annotations": {"batch.kubernetes.io/job-completion-index": index}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T10:15:10Z"
    return {"metadata": meta, "spec": {"nodeName": "spot-1"}, "status": status}


@pytest.mark.parametrize(
    ("condition", "status_reason", "cause"),
    [
        ("DeletionByTaintManager", None, Cause.NODE_LOST),
        ("DeletionByPodGC", None, Cause.NODE_LOST),
        ("TerminationByKubelet", "Terminated", Cause.NODE_SHUTDOWN),
        ("TerminationByKubelet", "Evicted", Cause.EVICTION),  # node pressure, not a shutdown
        ("EvictionByEvictionAPI", None, Cause.EVICTION),
        ("PreemptionByScheduler", None, Cause.PREEMPTION),
        ("SomethingNewer", None, Cause.EVICTION),
    ],
)
def test_the_pods_disruption_condition_names_the_cause(condition, status_reason, cause):
    end = pod_end(pod(condition=condition, status_reason=status_reason))
    assert end is not None and end.terminal and end.shard == 2 and end.node == "spot-1" and end.job == "r-judge-1-0"
    assert cause_of(end, job_exists=True, suspended=False) == cause
    assert cause_of(end, job_exists=False, suspended=False) == cause  # unmistakable, whatever became of its Job


def test_kueue_preemption_is_a_suspended_jobs_pod_that_was_removed():
    end = pod_end(pod(phase="Running", finished=False), deleted=True)
    assert end is not None and end.terminal and end.began_at is not None
    assert cause_of(end, job_exists=True, suspended=True) == Cause.KUEUE_PREEMPTION


def test_a_stage_that_saved_and_stopped_on_sigterm_without_a_word_from_the_cluster_was_stopped():
    end = pod_end(pod(message=encode(Failure.of(Reason.DISRUPTED, "saved step 250")), deleting=True))
    assert end is not None and end.told == Reason.DISRUPTED and end.message == "saved step 250"
    assert cause_of(end, job_exists=True, suspended=False) == Cause.STOPPED
    assert cause_of(end, job_exists=False, suspended=False) is None  # its Job was deleted: it went with it


def test_a_crash_or_a_running_or_succeeded_pod_is_no_disruption():
    crashed = pod_end(pod(message=encode(Failure.of(Reason.STAGE_FAILED, "KeyError"))))
    assert crashed is not None and cause_of(crashed, job_exists=True, suspended=False) is None
    assert pod_end(pod(phase="Running", finished=False)) is None
    assert pod_end(pod(phase="Succeeded")) is None
    assert pod_end({"metadata": {"name": "someone-elses"}, "status": {"phase": "Failed"}}) is None


# -- counting --------------------------------------------------------------------------------------------


def end(name, shard=0, node="spot-1", job="r-judge-1-0", at=1000.0, condition="DeletionByTaintManager"):
    return PodEnd(name=name, run="r", job=job, stage="judge-1", shard=shard, node=node, condition=condition, at=at, terminal=True)


LOST = LostWork(seconds=100.0, unit="samples", redone=40.0, saved=True)


def test_pods_stopped_together_on_one_node_are_one_disruption_with_their_costs_added():
    records, first, new = record_disruption([], end("p0", 0), Cause.NODE_LOST, LOST, 2, whole_job=False)
    assert new and first.gpu_seconds == 200.0
    records, joined, new = record_disruption(records, end("p1", 1, at=1030.0), Cause.NODE_LOST, LostWork(50.0, "samples", 10.0, True), 2, whole_job=False)
    assert not new and len(records) == 1
    assert (joined.pods, joined.shards, joined.redone, joined.seconds, joined.gpu_seconds) == (["p0", "p1"], [0, 1], 50.0, 100.0, 300.0)
    assert counted(records) == {"p0", "p1"}


def test_another_node_another_cause_or_later_is_another_disruption():
    records, _, _ = record_disruption([], end("p0"), Cause.NODE_LOST, LOST, 1, whole_job=False)
    for other, cause in ((end("p1", node="spot-2"), Cause.NODE_LOST), (end("p2", condition="EvictionByEvictionAPI"), Cause.EVICTION), (end("p3", at=5000.0), Cause.NODE_LOST)):
        records, _, new = record_disruption(records, other, cause, LOST, 1, whole_job=False)
        assert new
    assert len(records) == 4


def test_the_replacement_of_a_disrupted_pod_disrupted_in_turn_is_another_disruption():
    records, _, _ = record_disruption([], end("p0", 0), Cause.EVICTION, LOST, 1, whole_job=False)
    records, _, new = record_disruption(records, end("p0-replacement", 0, at=1010.0), Cause.EVICTION, LOST, 1, whole_job=False)
    assert new and len(records) == 2


def test_a_multi_node_training_attempt_is_one_disruption_and_the_rank_the_cluster_stopped_says_why():
    """Rank 0 stopped on SIGTERM when the Job failed for rank 1's eviction: one disruption, an
    eviction, its cost once (the whole Job's GPUs)."""
    collateral = PodEnd(name="t-0", run="r", job="r-train-1-0", stage="train-1", shard=0, node="a", told=Reason.DISRUPTED, at=1000.0, terminal=True)
    records, _, _ = record_disruption([], collateral, Cause.STOPPED, LOST, 16, whole_job=True)
    evicted = PodEnd(name="t-1", run="r", job="r-train-1-0", stage="train-1", shard=0, node="b", condition="EvictionByEvictionAPI", at=999.0, terminal=True)
    records, joined, new = record_disruption(records, evicted, Cause.EVICTION, LOST, 16, whole_job=True)
    assert not new and len(records) == 1
    assert (joined.cause, joined.reason, joined.pods, joined.gpu_seconds) == (Cause.EVICTION, "EvictionByEvictionAPI", ["t-0", "t-1"], 1600.0)


def test_past_the_cap_the_run_fails_with_a_reason_that_says_what_to_do():
    records = [DisruptionRecord(stage="judge-1", cause=Cause.NODE_LOST, at=float(i), gpu_seconds=1800.0) for i in range(2)]
    assert too_many("judge-1", records[:1], cap=1) is None
    failure = too_many("judge-1", records, cap=1)
    assert failure is not None and failure.reason == Reason.TOO_MANY_DISRUPTIONS and failure.permanent
    assert "judge-1 was disrupted 2 times (2 NodeLost; 1.0 GPU-hours of work redone)" in failure.message
    assert "retries.disruptionsPerStage (1)" in failure.message and "docs/spot.md" in failure.message
    assert too_many("judge-1", [], cap=0) is None and too_many("judge-1", records[:1], cap=0) is not None


# -- the grace period -------------------------------------------------------------------------------------


def test_the_grace_period_is_the_measured_save_with_room_between_a_floor_and_a_cap():
    assert grace_period(None, "training", (40.0, "train-1")).seconds == 70  # 1.5 x 40 + 10
    assert grace_period(None, "generation", (2.0, "judge-1")).seconds == GRACE_FLOOR
    assert grace_period(None, "training", (3000.0, "train-1")).seconds == GRACE_CAP
    assert "saving took 40s in train-1" in grace_period(None, "training", (40.0, "train-1")).basis


def test_before_any_save_is_measured_training_gets_more_than_the_rest_and_the_spec_wins():
    assert grace_period(None, "training", None).seconds == 120 and grace_period(None, "generation", None).seconds == GRACE_FLOOR
    spec = grace_period(45, "training", (3000.0, "train-1"))
    assert spec.seconds == 45 and "spec" in spec.basis


def test_the_newest_save_is_the_slowest_shard_of_the_stage_that_saved_last():
    old = ProgressRecord(stage="judge-1", shard=0, started_at=0, updated_at=10, saved=SavedState(done=5, at=10.0, seconds=90.0))
    shards = [ProgressRecord(stage="judge-2", shard=s, started_at=0, updated_at=50, saved=SavedState(done=5, at=40.0 + s, seconds=3.0 + s)) for s in range(3)]
    unsaved = ProgressRecord(stage="judge-2", shard=3, started_at=0, updated_at=60)
    assert newest_save([old, *shards, unsaved]) == (5.0, "judge-2")
    assert newest_save([unsaved]) is None


# -- the status keeps what was counted ----------------------------------------------------------------------


def test_the_status_shows_each_disruption_and_reads_back_what_it_counted():
    """What one pass counted is what the next pass reads back: a pod is never counted twice,
    however often it is looked at."""
    from selftaught.controller.decide import Decision
    from selftaught.controller.disruptions import Grace
    from selftaught.controller.status import Observation, build_status, history, status_document

    record = DisruptionRecord(
        stage="judge-1", cause=Cause.NODE_LOST, reason="DeletionByTaintManager", message="Taint manager: deleting", at=1_800_000_000.0,
        attempt="r-judge-1-0", node="spot-1", pods=["r-judge-1-0-2-abcde"], shards=[2], unit="samples", redone=120.0, seconds=300.0,
        gpus=2, gpu_seconds=600.0, saved=True,
    )  # fmt: skip
    decision = Decision(attempts={"judge-1": 1}, disrupted={"judge-1": [record]}, grace={"judge-1": Grace(70, "saving took 40s in judge-1")})
    document = status_document(build_status(Observation(generation=1, now="2027-01-15T08:00:00Z", previous={}, decision=decision)))
    stage = document["attempts"]["judge-1"]
    assert stage["disruptions"] == 1 and stage["lostGpuSeconds"] == 600.0 and stage["terminationGracePeriodSeconds"] == 70
    assert stage["disrupted"][0] == {
        "cause": "NodeLost", "reason": "DeletionByTaintManager", "message": "Taint manager: deleting", "at": "2027-01-15T08:00:00Z",
        "job": "r-judge-1-0", "node": "spot-1", "pods": ["r-judge-1-0-2-abcde"], "shards": [2], "redone": 120.0, "unit": "samples",
        "seconds": 300.0, "gpus": 2, "gpuSeconds": 600.0, "saved": True,
    }  # fmt: skip
    assert document["disruptions"] == {"count": 1, "gpuSeconds": 600.0, "causes": {"NodeLost": 1}, "message": "1 disruption (1 NodeLost): 600 GPU-seconds of work redone"}
    remembered = history(document)
    assert remembered.disrupted == {"judge-1": [record]} and remembered.grace == {"judge-1": Grace(70, "saving took 40s in judge-1")}
    assert remembered.disrupted_attempts == {"judge-1": 0}


def test_a_status_written_before_disruptions_were_counted_keeps_its_free_attempts():
    from selftaught.controller.status import history

    assert history({"attempts": {"train-1": {"attempts": 2, "disruptions": 1}}}).disrupted_attempts == {"train-1": 1}


# -- the local runner records what it stopped, `selftaught status` shows it ---------------------------------

STOPPED_STAGE = """
import os, signal, sys, time
from selftaught.errors import Failure, Reason, encode
from selftaught.store import LocalStore
from selftaught.store.layout import progress_key
from selftaught.store.progress import ProgressRecord, SavedState, write_progress

def stop(*_):  # what a stage does on SIGTERM: it saved, says so, and stops
    open(os.environ["SELFTAUGHT_TERMINATION_MESSAGE_PATH"], "w").write(encode(Failure.of(Reason.DISRUPTED, "saved at step 30")))
    sys.exit(1)

signal.signal(signal.SIGTERM, stop)
now = time.time()
record = ProgressRecord(stage="train-1", unit="steps", done=50, total=100, started_at=now - 10, updated_at=now, saved=SavedState(done=30, at=now - 4))
write_progress(LocalStore(sys.argv[1]), progress_key("iter-001/train", 0), record)
time.sleep(60)
"""


def test_a_stage_stopped_with_the_local_runner_is_recorded_and_selftaught_status_shows_it(tmp_path, make_run):
    """Ctrl-C or SIGTERM of `selftaught run` stops the stage, which saves and says Disrupted: the
    runner records the work lost, in the record the operator writes, and `selftaught status`
    shows it."""
    import sys
    import time

    from selftaught.local.runner import Interrupted, _Job, _run_jobs
    from selftaught.pipeline.runstore import accept
    from selftaught.views.overview import overview
    from selftaught.views.plan_text import plan_inputs

    run = make_run(storage=str(tmp_path / "store"))
    store = LocalStore(tmp_path / "store" / "tests" / "test")
    accept(store, run)
    ref = StageRef("train", 1)
    job = _Job([sys.executable, "-c", STOPPED_STAGE, str(store.root)], tmp_path / "train-1.log", tmp_path / "train-1.termination")
    started = time.monotonic()

    def signal_arrives():  # SIGTERM to the runner, once the stage is under way
        if store.exists("iter-001/train/_progress/00000.json") or time.monotonic() - started > 30:
            raise Interrupted(15)

    with pytest.raises(Interrupted):
        _run_jobs(ref, [job], [()], {"PYTHONPATH": ":".join(sys.path)}, None, signal_arrives, store)
    [key] = scan(store).disruption_keys[ref]
    record = read_disruption(store, key)
    assert record is not None and (record.cause, record.reason, record.message, record.executor) == (Cause.STOPPED, Reason.DISRUPTED, "saved at step 30", "local")
    assert (record.unit, record.redone, round(record.seconds), record.saved, record.gpus) == ("steps", 20.0, 4, True, 0)
    shown = overview(store, run, plan_inputs(run))
    assert "disrupted 1x (1 Stopped): 20 steps and 0 GPU-seconds redone" in shown
    assert "disruptions: 1 disruption (1 Stopped): 0 GPU-seconds of work redone" in shown


def test_a_new_jobs_grace_period_comes_from_the_slowest_save_of_the_stage_before_it(tmp_path, make_run):
    from selftaught.controller.reconciler import stage_grace
    from selftaught.store.layout import progress_key
    from selftaught.store.progress import write_progress

    store = LocalStore(tmp_path / "store")
    run = make_run(iterations=2)
    judge_2 = StageRef("judge", 2)
    assert stage_grace(run, store, scan(store), judge_2).seconds == GRACE_FLOOR  # nothing measured yet
    for shard, seconds in ((0, 40.0), (1, 52.0)):  # judge-1's shards saved when they were stopped
        saved = SavedState(done=5, at=90.0, seconds=seconds)
        write_progress(store, progress_key("iter-001/judge", shard), ProgressRecord(stage="judge-1", shard=shard, started_at=0, updated_at=100, saved=saved))
    grace = stage_grace(run, store, scan(store), judge_2)
    assert grace.seconds == 88 and grace.basis.startswith("saving took 52s in judge-1")  # 1.5 x 52 + 10
    assert stage_grace(run, store, scan(store), StageRef("train", 2)).seconds == 120  # another stage's saves are not its own
    pinned = make_run(iterations=2, scheduling={"stages": {"judge": {"terminationGracePeriodSeconds": 45}}})
    assert stage_grace(pinned, store, scan(store), judge_2).seconds == 45


def test_a_stopped_pod_waits_for_a_pass_and_once_settled_the_watch_repeating_it_changes_nothing():
    from selftaught.controller.echoes import Echoes
    from selftaught.controller.intake import Intake

    class Queue:
        def __init__(self):
            self.submitted = []

        def submit(self, key, fresh=False):
            self.submitted.append(key)

    queue = Queue()
    intake = Intake(queue, Echoes(), lambda key: None)  # type: ignore[arg-type]
    intake.pod_changed("ml", "r", pod(phase="Running", finished=False, condition="EvictionByEvictionAPI"))  # still saving
    assert intake.pod_ends(("ml", "r")) == [] and queue.submitted == []
    intake.pod_changed("ml", "r", pod(condition="EvictionByEvictionAPI"))  # stopped: a pass may count it
    [stopped] = intake.pod_ends(("ml", "r"))
    assert stopped.condition == "EvictionByEvictionAPI" and queue.submitted == [("ml", "r")]
    intake.settle(("ml", "r"), [stopped.name])
    intake.pod_changed("ml", "r", pod(condition="EvictionByEvictionAPI"), "DELETED")  # the watch's last word on it
    assert intake.pod_ends(("ml", "r")) == [] and queue.submitted == [("ml", "r")]
