"""What a real cluster does to stage Jobs, produced by the test cluster, and what the user then
sees: a run never hangs without saying why, and always ends with a bounded number of attempts.

The stages are fakes (tests/operator/fake_stage.py): these tests are about Jobs and pods."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from kopf._core.engines.activities import ActivityError

from selftaught.api.crd import crd
from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object

RUNS = "selftaught.dev/v1alpha1/selftaughtruns"


def condition(obj, kind):
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def status_of(cluster, name):
    return (cluster.get(RUNS, NAMESPACE, name) or {}).get("status") or {}


def events_of(cluster, name):
    return [e for e in cluster.list("v1/events", NAMESPACE) if e["involvedObject"]["name"] == name]


def jobs_of(cluster, name):
    return cluster.list("batch/v1/jobs", NAMESPACE, label_selector=f"selftaught.dev/run={name}")


def quick(make_run, tmp_path, **spec):
    """A run on fake stages: one iteration, no baseline, a local store."""
    spec.setdefault("evaluate", {"baseline": False})
    return make_run(storage=str(tmp_path / "store"), **spec)


def finished(cluster, name, timeout=60):
    return cluster.wait_for(lambda: status_of(cluster, name).get("phase") in ("Succeeded", "Failed") and status_of(cluster, name), timeout=timeout)


def test_a_run_on_fake_stages_succeeds_and_counts_one_attempt_per_stage(cluster, fake_stages, make_run, tmp_path):
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path), "fast"), NAMESPACE)
        status = finished(cluster, "fast")
    assert status["phase"] == "Succeeded", status
    assert {label: stage["attempts"] for label, stage in status["attempts"].items()} == dict.fromkeys(
        ["categorize", "select", "pairs", "judge-1", "train-1", "evaluate-1"], 1
    )
    assert status["latestOverall"] == 0.7


def test_pods_that_cannot_start_are_explained_once_then_fail_the_attempt_after_the_startup_timeout(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path, scheduling={"generation": {"startupTimeoutSeconds": 10}}, retries={"perStage": 1, "backoffSeconds": 1})
    obj = run_object(run, "nosecret")
    obj["spec"]["storage"]["credentialsSecret"] = "s3-credentails"  # a typo: the Secret does not exist
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, obj, NAMESPACE)
        waiting = cluster.wait_for(lambda: "not starting" in status_of(cluster, "nosecret").get("message", "") and status_of(cluster, "nosecret"), timeout=60)
        assert "CreateContainerConfigError" in waiting["message"] and "s3-credentails" in waiting["message"]
        assert condition({"status": waiting}, "Reconciling")["reason"] == "CreateContainerConfigError"
        assert waiting["active"][0]["waiting"].startswith("CreateContainerConfigError")
        status = finished(cluster, "nosecret", timeout=90)
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "CreateContainerConfigError"
    assert "did not start within 10s" in status["message"] and "s3-credentails" in status["message"]
    assert status["attempts"]["categorize"]["attempts"] == 2  # bounded: perStage 1 → two attempts
    assert jobs_of(cluster, "nosecret") == [] or all(j["metadata"]["name"].startswith("nosecret-categorize-") for j in jobs_of(cluster, "nosecret"))
    reasons = [e["reason"] for e in events_of(cluster, "nosecret")]
    assert reasons.count("StageNotStarting") == 2 and reasons.count("StageStartTimeout") == 2  # once per Job, not per resync


def test_a_job_deleted_by_someone_is_counted_and_said_not_recreated_silently(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path, scheduling={"generation": {"startupTimeoutSeconds": 3600}}, retries={"perStage": 1, "backoffSeconds": 1})
    obj = run_object(run, "deleted")
    obj["spec"]["storage"]["credentialsSecret"] = "not-yet"  # pods wait, so the Job stays active
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, obj, NAMESPACE)
        cluster.wait_for(lambda: cluster.get("batch/v1/jobs", NAMESPACE, "deleted-categorize-0"), timeout=30)
        cluster.delete("batch/v1/jobs", NAMESPACE, "deleted-categorize-0", propagation="Background")
        retry = cluster.wait_for(lambda: cluster.get("batch/v1/jobs", NAMESPACE, "deleted-categorize-1"), timeout=120)
        status = status_of(cluster, "deleted")
    assert retry["metadata"]["labels"]["selftaught.dev/attempt"] == "1"  # a new attempt, not the same name again
    assert status["attempts"]["categorize"]["lastFailure"]["reason"] == "JobDeleted"
    assert "JobDeleted" in [e["reason"] for e in events_of(cluster, "deleted")]


def test_a_job_the_api_server_refuses_fails_the_run_once_with_the_servers_message(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path)
    obj = run_object(run, "typo")
    obj["spec"]["scheduling"] = {"generation": {"affinity": {"nodeAffinty": {}}}}  # misspelt: not silently dropped
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, obj, NAMESPACE)
        status = finished(cluster, "typo")
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "InvalidJob"
    assert "nodeAffinty" in status["message"]
    assert [e["reason"] for e in events_of(cluster, "typo")].count("JobCreateFailed") == 0  # no retry every 10 s


def test_a_new_run_under_an_earlier_runs_name_with_another_spec_says_whose_data_it_is(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path)
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "reused"), NAMESPACE)
        assert finished(cluster, "reused")["phase"] == "Succeeded"
        cluster.delete(RUNS, NAMESPACE, "reused")
        cluster.wait_for(lambda: cluster.get(RUNS, NAMESPACE, "reused") is None, timeout=30)
        changed = run_object(run, "reused")
        changed["spec"]["judge"]["samples"] = 9
        cluster.create(RUNS, changed, NAMESPACE)
        status = cluster.wait_for(lambda: status_of(cluster, "reused").get("phase") == "Failed" and status_of(cluster, "reused"), timeout=30)
    assert condition({"status": status}, "SpecAccepted")["reason"] == "RunNameInUse"
    message = status["message"]
    assert "earlier run named reused" in message and "judge.samples" in message and "delete" in message and str(tmp_path / "store") in message
    assert condition({"status": status}, "Ready")["status"] == "False" and condition({"status": status}, "Succeeded")["status"] == "False"
    assert "RunNameInUse" in [e["reason"] for e in events_of(cluster, "reused")]


def test_fields_from_a_newer_crd_are_ignored_with_a_warning_not_failed_as_an_invalid_spec(cluster, fake_stages, make_run, tmp_path):
    newer = crd()
    schema = newer["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["judge"]
    schema["properties"]["newKnob"] = {"type": "integer", "default": 3}  # what an upgraded CRD adds
    cluster.install_crd(newer)
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path), "skew"), NAMESPACE)
        status = finished(cluster, "skew")
    assert status["phase"] == "Succeeded" and status["ignoredFields"] == ["spec.judge.newKnob"]
    assert [e["reason"] for e in events_of(cluster, "skew")].count("UnknownFields") == 1


def test_a_status_write_that_loses_a_race_is_retried_at_once_not_at_the_next_resync(cluster, fake_stages, make_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SELFTAUGHT_RESYNC_SECONDS", "600")
    cluster.emulator["patch selftaught.dev/v1alpha1/selftaughtruns"][:1] << 409
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path), "race"), NAMESPACE)
        assert finished(cluster, "race", timeout=60)["phase"] == "Succeeded"


def test_the_operator_exits_when_the_crd_is_not_installed():
    from tests.kube import DEFAULT_RESOURCES, FakeCluster

    without = [r for r in DEFAULT_RESOURCES if "selftaughtruns" not in str(r)]
    with FakeCluster(resources=without, namespaces=(NAMESPACE,)) as bare, pytest.raises(ActivityError) as stopped:  # noqa: SIM117
        with run_operator(bare, HANDLERS, namespace=NAMESPACE):
            time.sleep(5)  # Kopf stops on its own; the block ends with its error
    assert "CustomResourceDefinition (v1alpha1) is not installed" in str(stopped.value.__cause__)


def test_pods_no_node_can_take_are_reported_unschedulable_then_fail_the_attempt(cluster, fake_stages, make_run, tmp_path):
    fake_stages.nodes = [{"name": "gpu-node-1", "allocatable": {"nvidia.com/gpu": "1", "cpu": "16", "memory": "64Gi"}}]
    run = quick(make_run, tmp_path, generation={"tensorParallel": 2}, scheduling={"generation": {"startupTimeoutSeconds": 6}}, retries={"perStage": 0})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "toobig"), NAMESPACE)
        waiting = cluster.wait_for(lambda: "Unschedulable" in status_of(cluster, "toobig").get("message", "") and status_of(cluster, "toobig"), timeout=60)
        status = finished(cluster, "toobig")
    assert "Insufficient nvidia.com/gpu" in waiting["message"]
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "Unschedulable"
    assert status["attempts"]["categorize"]["attempts"] == 1


def test_an_image_that_does_not_pull_is_explained_and_the_run_goes_on_once_it_does(cluster, fake_stages, make_run, tmp_path):
    image = "registry.example.com/ml/generate:typo"
    fake_stages.bad_images.add(image)
    run = quick(make_run, tmp_path, scheduling={"generation": {"image": image, "startupTimeoutSeconds": 300}})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "pull"), NAMESPACE)
        waiting = cluster.wait_for(lambda: "ImagePullBackOff" in status_of(cluster, "pull").get("message", "") and status_of(cluster, "pull"), timeout=60)
        fake_stages.bad_images.discard(image)  # the registry is fixed
        status = finished(cluster, "pull")
    assert image in waiting["message"] and condition({"status": waiting}, "Reconciling")["reason"] == "ImagePullBackOff"
    assert status["phase"] == "Succeeded" and status["attempts"]["categorize"]["attempts"] == 1


def test_pods_the_api_server_refuses_are_reported_from_the_jobs_events(cluster, fake_stages, make_run, tmp_path):
    fake_stages.refuse_pods("quota-categorize")
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path), "quota"), NAMESPACE)
        waiting = cluster.wait_for(lambda: "FailedCreate" in status_of(cluster, "quota").get("message", "") and status_of(cluster, "quota"), timeout=60)
        fake_stages.allow_pods()
        status = finished(cluster, "quota")
    assert "exceeded quota" in waiting["message"]
    assert status["phase"] == "Succeeded"


def test_a_job_queued_in_kueue_says_so_and_queued_time_is_not_a_startup_failure(cluster, fake_stages, make_run, tmp_path):
    from tests.kube import Kueue

    run = quick(make_run, tmp_path, scheduling={"generation": {"queueName": "gpu", "startupTimeoutSeconds": 1}})
    with Kueue(cluster) as kueue, run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "queued"), NAMESPACE)
        queued = cluster.wait_for(lambda: "queued" in status_of(cluster, "queued").get("message", "") and status_of(cluster, "queued"), timeout=60)
        time.sleep(4)  # far past the startup timeout: queueing is not a failure
        assert status_of(cluster, "queued")["phase"] != "Failed"
        kueue.auto_admit = True
        kueue.admit_all()
        status = finished(cluster, "queued")
    assert "held by Kueue in queue gpu" in queued["message"] and condition({"status": queued}, "Reconciling")["reason"] == "Queued"
    assert status["phase"] == "Succeeded" and status["attempts"]["categorize"]["attempts"] == 1


def test_an_evicted_generation_pod_is_replaced_and_spends_no_retry(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env["FAKE_STAGE_SECONDS"] = "categorize=3"
    run = quick(make_run, tmp_path, retries={"perStage": 0})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "evicted"), NAMESPACE)
        cluster.wait_for(lambda: any(a.job == "evicted-categorize-0" for a in fake_stages.attempts), timeout=60)
        fake_stages.evict("evicted-categorize-0", namespace=NAMESPACE, reason="PreemptionByScheduler")
        status = finished(cluster, "evicted", timeout=120)
    assert status["phase"] == "Succeeded" and status["attempts"]["categorize"]["attempts"] == 1


def test_a_disrupted_multi_node_training_attempt_fails_at_once_and_spends_no_retry(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env["FAKE_STAGE_SECONDS"] = "train=3"
    run = quick(make_run, tmp_path, train={"nodes": 2, "gpusPerNode": 1}, retries={"perStage": 0, "backoffSeconds": 1})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "drain"), NAMESPACE)
        cluster.wait_for(lambda: any(a.job == "drain-train-1-0" and a.pid for a in fake_stages.attempts), timeout=90)
        fake_stages.evict("drain-train-1-0", index=1, namespace=NAMESPACE, reason="EvictionByEvictionAPI")
        status = finished(cluster, "drain", timeout=120)
    train = status["attempts"]["train-1"]
    assert status["phase"] == "Succeeded", f"{status['message']} {status['attempts']}"
    assert train["attempts"] == 2 and train["disruptions"] == 1
    assert train["lastFailure"]["reason"] == "Disrupted"


def test_a_failed_job_deleted_by_its_ttl_still_counts_so_retries_stay_bounded(cluster, fake_stages, make_run, tmp_path):
    run = quick(make_run, tmp_path, scheduling={"generation": {"ttlSecondsAfterFinished": 0}}, retries={"perStage": 1, "backoffSeconds": 1})
    for _ in range(3):
        fake_stages.fail_next("ttl-categorize", exit_code=1, message="boom")
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "ttl"), NAMESPACE)
        status = finished(cluster, "ttl", timeout=120)
    assert status["phase"] == "Failed" and status["attempts"]["categorize"]["attempts"] == 2  # not recreated forever


def test_a_stage_killed_without_a_word_shows_its_exit_code_and_reason(cluster, fake_stages, make_run, tmp_path):
    fake_stages.fail_next("oom-categorize", exit_code=137, message="", reason="OOMKilled")  # the kubelet's word for the memory limit
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path, retries={"perStage": 0}), "oom"), NAMESPACE)
        status = finished(cluster, "oom")
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "OOMKilled"
    assert "exit code 137" in status["message"]


def test_jobs_of_an_earlier_run_with_the_same_name_are_not_taken_for_this_runs(cluster, fake_stages, make_run, tmp_path):
    """On a real API server a deleted run's Jobs go away asynchronously: match by owner UID."""
    leftover = {
        "metadata": {
            "name": "again-categorize-0",
            "labels": {"app.kubernetes.io/managed-by": "selftaught-operator", "selftaught.dev/run": "again", "selftaught.dev/stage": "categorize", "selftaught.dev/attempt": "0"},
            "ownerReferences": [{"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "name": "again", "uid": "0000-earlier-run"}],
        },
        "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}},
    }  # fmt: skip
    cluster.create("batch/v1/jobs", leftover, NAMESPACE)
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path, retries={"backoffSeconds": 1}), "again"), NAMESPACE)
        status = finished(cluster, "again", timeout=90)
    assert status["phase"] == "Succeeded"  # the leftover (suspended forever) never held this run up


def test_a_running_stage_shows_its_progress_and_eta_and_the_run_its_estimated_cost(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env["FAKE_STAGE_SECONDS"] = "judge=20"  # each judge shard writes "half done, 10 s in" first
    run = quick(make_run, tmp_path, generation={"shards": 2})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "watched"), NAMESPACE)
        # both shards' records: the stage writes them one after the other, and a look between the two
        # rightly sees one shard's half (25 %)
        watched = cluster.wait_for(lambda: (o := cluster.get(RUNS, NAMESPACE, "watched") or {}).get("status", {}).get("progress", {}).get("done") == 100 and o, timeout=90)
        running, columns = watched["status"], printed_columns(watched)
        status = finished(cluster, "watched", timeout=120)
        report = cluster.wait_for(lambda: (path := Path(status["report"])).is_file() and path, timeout=120)  # a moment after the last manifest
    progress = running["progress"]
    assert progress["stage"] == "judge-1" == running["stage"]
    assert (progress["percent"], progress["done"], progress["total"], progress["unit"]) == (50.0, 100, 200, "samples")
    assert progress["etaSeconds"] == 10 and progress["eta"] == "10s" and progress["tokensPerSecond"] == 400.0
    assert columns["Stage-%"] == 50.0 and columns["Stage-ETA"] == "10s"  # -o wide: the running stage's
    assert re.fullmatch(r"\d+/\d+", columns["Stages"]) and columns["Progress"].endswith("%") and columns["ETA"] not in (None, "10s")  # the run's
    # priced before judge-1 ran, from categorize's measured instructions; measured stage by stage after
    assert running["estimate"]["gpu"] == "H100" and running["estimate"]["gpuHours"] > 0 and running["estimate"]["measuredStages"] == 3
    assert status["phase"] == "Succeeded" and "progress" not in status
    assert status["estimate"]["measuredStages"] == 6 and status["estimate"]["remainingGpuHours"] == 0
    # the run's report, written by the stage that finished the run, and where it is
    assert report == tmp_path / "store" / NAMESPACE / "watched" / "report" / "index.html"
    assert '<img id="plot-accuracy"' in report.read_text()


def printed_columns(obj):
    """The printer columns of `kubectl get` for `obj`, by the CRD's JSONPaths (simple paths only)."""
    values = {}
    for column in crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if "[" in path:
            continue
        value = obj
        for part in path.strip(".").split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values[column["name"]] = value
    return values
