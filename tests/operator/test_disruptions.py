"""Spot-safe runs on the test cluster: a stage pod lost with its node, evicted by a drain or
preempted by Kueue is replaced, spends no retry, and the run's status (and `selftaught status`)
says what stopped it and the work that cost, each disruption counted once; a stage disrupted
more often than `retries.disruptionsPerStage` allows fails the run with TooManyDisruptions.

The stages are fakes (tests/operator/fake_stage.py): a stage told to take its time writes its
progress (50 of 100 done, a state saved 4 s before holding 30) and waits to be disrupted; told to
resume, its replacement finishes at once."""

from __future__ import annotations

from selftaught.pipeline.runstore import open_run_store
from selftaught.views.overview import overview
from selftaught.views.plan_text import plan_inputs
from tests.kube import Kueue, run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, events_of, finished, jobs_of, quick, status_of

#: what the fake stage's progress says it would redo: 50 done, 30 saved 4 s before
REDONE, SECONDS = 20.0, 4.0


def progress_written(tmp_path, run_name, prefix):
    return (tmp_path / "store" / NAMESPACE / run_name / prefix / "_progress" / "00000.json").is_file()


def disrupted(cluster, name, stage, count=1):
    """The status, once it counts `count` disruptions of `stage`."""
    return cluster.wait_for(
        lambda: (s := status_of(cluster, name)).get("attempts", {}).get(stage, {}).get("disruptions", 0) >= count and s, timeout=60
    )


def test_a_pod_lost_with_its_node_and_one_evicted_by_a_drain_are_replaced_and_each_disruption_is_shown_once_with_its_cost(
    cluster, fake_stages, make_run, tmp_path
):
    fake_stages.extra_env.update(FAKE_STAGE_SECONDS="categorize=60,judge=60", FAKE_STAGE_SAVED="1", FAKE_STAGE_RESUME="1")
    run = quick(make_run, tmp_path, generation={"tensorParallel": 2}, retries={"perStage": 0})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "spot"), NAMESPACE)
        cluster.wait_for(lambda: progress_written(tmp_path, "spot", "categorize"), timeout=60)
        [lost] = fake_stages.lose_node("fake-node")  # the spot VM is reclaimed: SIGKILL, no grace
        during = disrupted(cluster, "spot", "categorize")
        fake_stages.nodes.append({"name": "spot-2"})  # the node pool brings another
        cluster.wait_for(lambda: progress_written(tmp_path, "spot", "iter-001/judge"), timeout=90)
        evicted = fake_stages.evict("spot-judge-1-0", namespace=NAMESPACE)  # a drain: SIGTERM, the grace period
        status = finished(cluster, "spot", timeout=120)

    assert status["phase"] == "Succeeded", status["message"]
    attempts = status["attempts"]
    assert attempts["categorize"]["attempts"] == 1 and attempts["judge-1"]["attempts"] == 1  # replaced in their Job: no retry
    [node_lost] = attempts["categorize"]["disrupted"]
    assert {k: node_lost[k] for k in ("cause", "reason", "job", "node", "pods", "shards", "unit", "gpus", "saved")} == {
        "cause": "NodeLost", "reason": "DeletionByTaintManager", "job": "spot-categorize-0", "node": "fake-node",
        "pods": [lost.pod], "shards": [0], "unit": "samples", "gpus": 2, "saved": True,
    }  # fmt: skip
    assert (node_lost["redone"], node_lost["seconds"], node_lost["gpuSeconds"]) == (REDONE, SECONDS, 2 * SECONDS)
    [drained] = attempts["judge-1"]["disrupted"]
    assert (drained["cause"], drained["reason"], drained["pods"], drained["gpuSeconds"]) == ("Eviction", "EvictionByEvictionAPI", [evicted.pod], 2 * SECONDS)
    assert status["disruptions"] == {
        "count": 2, "gpuSeconds": 4 * SECONDS, "causes": {"NodeLost": 1, "Eviction": 1},
        "message": "2 disruptions (1 Eviction, 1 NodeLost): 16 GPU-seconds of work redone",
    }  # fmt: skip
    assert "categorize" in during["message"] and "disrupted 1x" in during["message"]  # while its replacement waits for a node
    # the pods' grace period, and why: nothing was measured yet (a generation stage's default)
    assert attempts["categorize"]["terminationGracePeriodSeconds"] == 30 and "default for generation" in attempts["categorize"]["gracePeriodBasis"]
    job = next(j for j in jobs_of(cluster, "spot") if j["metadata"]["name"] == "spot-categorize-0")
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 30
    # counted once, however many passes and pod events looked at them
    told = [e["message"] for e in events_of(cluster, "spot") if e["reason"] == "StageDisrupted"]
    assert len(told) == 2 and any(f"categorize: the stage (pod {lost.pod} on fake-node) lost its node (DeletionByTaintManager)" in m for m in told)
    assert any("judge-1: the stage" in m and "was evicted (EvictionByEvictionAPI); 20 samples and 8 GPU-seconds to redo; disruption 1 of at most 10" in m for m in told)
    # and `selftaught status`, from the store alone, shows the same
    shown = overview(open_run_store(run.model_copy(update={"metadata": run.metadata.model_copy(update={"name": "spot", "namespace": NAMESPACE})})), run, plan_inputs(run))
    assert "disrupted 1x (1 NodeLost): 20 samples and 8 GPU-seconds redone" in shown
    assert "disruptions: 2 disruptions (1 Eviction, 1 NodeLost): 16 GPU-seconds of work redone" in shown


def test_a_stage_disrupted_more_often_than_the_cap_allows_fails_the_run_with_too_many_disruptions(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env.update(FAKE_STAGE_SECONDS="train=60", FAKE_STAGE_SAVED="1")  # every pod of train-1 waits to be evicted
    run = quick(make_run, tmp_path, train={"gpusPerNode": 4}, retries={"perStage": 0, "disruptionsPerStage": 1})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "capped"), NAMESPACE)
        cluster.wait_for(lambda: progress_written(tmp_path, "capped", "iter-001/train"), timeout=90)
        fake_stages.evict("capped-train-1-0", namespace=NAMESPACE)
        first = disrupted(cluster, "capped", "train-1")
        assert first["phase"] == "Running"  # one disruption: the cap allows it
        cluster.wait_for(lambda: len([a for a in fake_stages.attempts if a.job == "capped-train-1-0" and a.pid]) == 2, timeout=60)
        fake_stages.evict("capped-train-1-0", namespace=NAMESPACE)  # its replacement, evicted too
        status = finished(cluster, "capped", timeout=60)
        cluster.wait_for(lambda: not [j for j in jobs_of(cluster, "capped") if j["metadata"]["name"] == "capped-train-1-0"], timeout=30)
        cluster.wait_for(lambda: all(a.exit_code is not None for a in fake_stages.attempts), timeout=30)  # no more work redone

    failed = condition({"status": status}, "Succeeded")
    assert status["phase"] == "Failed" and failed["reason"] == "TooManyDisruptions"
    assert failed["message"].startswith("train-1 was disrupted 2 times (2 Eviction; 32 GPU-seconds of work redone), more than retries.disruptionsPerStage (1)")
    train = status["attempts"]["train-1"]
    assert train["disruptions"] == 2 and train["lostGpuSeconds"] == 2 * 4 * SECONDS and train["attempts"] == 1
    assert train["terminationGracePeriodSeconds"] == 120  # training's default until a save was measured
    reasons = [e["reason"] for e in events_of(cluster, "capped") if e["type"] == "Warning"]
    assert reasons.count("StageDisrupted") == 2 and "TooManyDisruptions" in reasons and "RunFailed" in reasons


def test_a_stage_preempted_by_kueue_is_counted_and_goes_on_once_admitted_again(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env.update(FAKE_STAGE_SECONDS="categorize=60", FAKE_STAGE_RESUME="1")
    run = quick(make_run, tmp_path, scheduling={"generation": {"queueName": "gpu"}})
    with Kueue(cluster, admit=True) as kueue, run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "kueued"), NAMESPACE)
        cluster.wait_for(lambda: progress_written(tmp_path, "kueued", "categorize"), timeout=60)
        kueue.preempt(NAMESPACE, "kueued-categorize-0")
        during = disrupted(cluster, "kueued", "categorize")
        kueue.admit(NAMESPACE, "kueued-categorize-0")
        status = finished(cluster, "kueued", timeout=90)

    assert status["phase"] == "Succeeded" and status["attempts"]["categorize"]["attempts"] == 1
    [preempted] = status["attempts"]["categorize"]["disrupted"]
    assert (preempted["cause"], preempted["reason"], preempted["job"]) == ("KueuePreemption", "JobSuspended", "kueued-categorize-0")
    assert preempted["unit"] == "samples" and preempted["redone"] == 50.0  # nothing saved: all of it again
    assert "categorize queued, disrupted 1x: held by Kueue in queue gpu" in during["message"]  # requeued meanwhile
