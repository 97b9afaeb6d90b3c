"""The operator, end to end: real Kopf against the fake API server, every Job's real command run
by the test kubelet (vLLM and DeepSpeed on the tiny model, S3 over HTTP; the operator's restart
on fake stages in the default suite, on the real engines under `-m slow`)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from selftaught.store.layout import RUN_SNAPSHOT
from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object

RUNS = "selftaught.dev/v1alpha1/selftaughtruns"


def condition(obj, kind):
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def status_of(cluster, name):
    return cluster.get(RUNS, NAMESPACE, name) or {}


def jobs(cluster, run_name):
    return cluster.list("batch/v1/jobs", NAMESPACE, label_selector=f"selftaught.dev/run={run_name}")


def test_a_run_goes_from_creation_to_succeeded_even_when_the_operator_is_restarted(cluster, fake_stages, make_run, bucket, s3_server):
    """What the operator does with Jobs across its own restart; the stages are fakes that take a
    moment each (the real engines: the slow test below)."""
    fake_stages.extra_env["FAKE_STAGE_SECONDS"] = "1"
    run_restarted_operator(cluster, fake_stages, make_run, bucket, s3_server, timeout=120)


@pytest.mark.slow
def test_a_run_on_the_real_engines_goes_from_creation_to_succeeded_even_when_the_operator_is_restarted(cluster, kubelet, make_run, bucket, s3_server):
    """The same, every Job running its real command: vLLM and DeepSpeed on the tiny model."""
    run_restarted_operator(cluster, kubelet, make_run, bucket, s3_server, timeout=480)


def run_restarted_operator(cluster, kubelet, make_run, bucket, s3_server, *, timeout: float) -> None:
    run = make_run(storage=bucket, endpoint=s3_server, evaluate={"baseline": False})  # sharding: tests/integration
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "e2e"), NAMESPACE)
        first = cluster.wait_for(lambda: condition(status_of(cluster, "e2e"), "Succeeded"), timeout=30)
        assert first["status"] == "Unknown"  # written on the first visit
        cluster.wait_for(lambda: any(j["metadata"]["labels"]["selftaught.dev/stage"] == "pairs" for j in jobs(cluster, "e2e")), timeout=180)
    # the operator is gone while Jobs keep running; a new one takes over from what exists
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.wait_for(lambda: condition(status_of(cluster, "e2e"), "Succeeded").get("status") in ("True", "False"), timeout=timeout)
        obj = status_of(cluster, "e2e")
    assert condition(obj, "Succeeded")["status"] == "True", obj["status"]
    status = obj["status"]
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == obj["metadata"]["generation"]
    assert condition(obj, "Ready")["status"] == "True" and condition(obj, "Reconciling")["status"] == "False"
    rows = {row["iteration"]: row for row in status["iterations"]}
    assert rows[1]["kept"] > 0 and 0 <= rows[1]["accuracy"] <= 1 and rows[1]["checkpoint"]
    assert status["latestAccuracy"] == rows[1]["accuracy"]

    names = [j["metadata"]["name"] for j in jobs(cluster, "e2e")]
    assert sorted(names) == sorted(f"e2e-{s}-0" for s in ("categorize", "select", "pairs", "judge-1", "train-1", "evaluate-1"))
    assert len(kubelet.started) == len(set(kubelet.started))  # nothing ran twice
    for job in jobs(cluster, "e2e"):
        kubernetes_validate.validate(job, "1.33", strict=True)
        assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    reasons = [e["reason"] for e in cluster.list("v1/events", NAMESPACE) if e["involvedObject"]["name"] == "e2e"]
    assert {"StageStarted", "StageSucceeded", "RunRunning", "RunSucceeded"} <= set(reasons)
    env = {e["name"]: e for e in jobs(cluster, "e2e")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
    assert "testing" not in str(obj["status"]) + str(reasons)  # the secret's value appears nowhere


def test_a_stage_that_keeps_failing_is_retried_then_fails_the_run_with_its_reason(cluster, kubelet, make_run, bucket, s3_server):
    run = make_run(storage=bucket, endpoint=s3_server, retries={"perStage": 1, "backoffSeconds": 1})
    message = '{"reason": "StorageUnavailable", "message": "s3://x: storage unreachable", "permanent": false}'
    kubelet.fail_next("flaky-categorize", exit_code=1, message=message)
    kubelet.fail_next("flaky-categorize", exit_code=1, message=message)
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "flaky"), NAMESPACE)
        cluster.wait_for(lambda: condition(status_of(cluster, "flaky"), "Succeeded").get("status") == "False", timeout=60)
    obj = status_of(cluster, "flaky")
    failed = condition(obj, "Succeeded")
    assert failed["reason"] == "StorageUnavailable" and "categorize failed 2 times" in failed["message"]
    assert condition(obj, "Stalled")["status"] == "True" and obj["status"]["phase"] == "Failed"
    assert sorted(j["metadata"]["name"] for j in jobs(cluster, "flaky")) == ["flaky-categorize-0", "flaky-categorize-1"]
    reasons = [e["reason"] for e in cluster.list("v1/events", NAMESPACE) if e["involvedObject"]["name"] == "flaky"]
    assert {"StageFailed", "StageRetrying", "RunFailed"} <= set(reasons)


def test_a_missing_input_fails_the_run_at_once_with_a_message_naming_it(cluster, kubelet, make_run, bucket, s3_server, tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    run = make_run(storage=bucket, endpoint=s3_server, data={"instructions": {"source": str(missing)}})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "nodata"), NAMESPACE)
        cluster.wait_for(lambda: condition(status_of(cluster, "nodata"), "Succeeded").get("status") == "False", timeout=60)
    failed = condition(status_of(cluster, "nodata"), "Succeeded")
    assert failed["reason"] == "InvalidInput" and f"{missing}: no such file or folder" in failed["message"]
    assert [j["metadata"]["name"] for j in jobs(cluster, "nodata")] == ["nodata-categorize-0"]  # not retried


def test_a_spec_the_operator_cannot_use_is_refused_with_the_field_named(cluster, kubelet, make_run, bucket, s3_server):
    body = run_object(make_run(storage=bucket, endpoint=s3_server), "bad")
    body["spec"]["select"] = {"categories": ["Poetry"]}
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, body, NAMESPACE)
        cluster.wait_for(lambda: condition(status_of(cluster, "bad"), "SpecAccepted").get("status") == "False", timeout=30)
    obj = status_of(cluster, "bad")
    assert condition(obj, "Succeeded")["reason"] == "InvalidSpec"
    assert "spec.select.categories" in condition(obj, "SpecAccepted")["message"] and "Poetry" in condition(obj, "SpecAccepted")["message"]
    assert jobs(cluster, "bad") == []


def test_suspend_pauses_resume_continues_and_delete_removes_jobs_but_keeps_data(cluster, kubelet, make_run, bucket, s3_server):
    from selftaught.pipeline.runstore import open_run_store

    run = make_run(storage=bucket, endpoint=s3_server)
    body = run_object(run, "paused")
    body["spec"]["suspend"] = True
    kubelet.pause()  # Jobs are created but do not run: we look at the operator only
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, body, NAMESPACE)
        cluster.wait_for(lambda: condition(status_of(cluster, "paused"), "Suspended").get("status") == "True", timeout=30)
        assert jobs(cluster, "paused") == [] and status_of(cluster, "paused")["status"]["phase"] == "Suspended"
        cluster.patch(RUNS, NAMESPACE, "paused", {"spec": {"suspend": False}})
        cluster.wait_for(lambda: jobs(cluster, "paused"), timeout=30)
        obj = cluster.wait_for(lambda: (o := status_of(cluster, "paused")) and condition(o, "Suspended").get("status") == "False" and o, timeout=30)
        # Pending until its first Job is seen active, Running after: either says "resumed"
        assert obj["status"]["phase"] in ("Pending", "Running") and condition(obj, "Reconciling")["status"] == "True"
        cluster.delete(RUNS, NAMESPACE, "paused")
        cluster.wait_for(lambda: not jobs(cluster, "paused"), timeout=30)
    assert open_run_store(run.model_copy(update={"metadata": run.metadata.model_copy(update={"name": "paused", "namespace": NAMESPACE})})).exists(RUN_SNAPSHOT)


def test_an_unsafe_edit_is_refused_with_a_condition_and_the_run_keeps_its_spec(cluster, kubelet, make_run, bucket, s3_server):
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.pipeline.table import StageRef
    from selftaught.store.manifest import Manifest, write_manifest

    run = make_run(storage=bucket, endpoint=s3_server)
    store = open_run_store(run.model_copy(update={"metadata": run.metadata.model_copy(update={"name": "edited", "namespace": NAMESPACE})}))
    kubelet.pause()
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "edited"), NAMESPACE)
        cluster.wait_for(lambda: jobs(cluster, "edited"), timeout=30)
        categorize = StageRef("categorize")  # a finished shard: output that categorize.maxTokens changes
        write_manifest(store, categorize.shard_manifest_key(0), Manifest(stage=categorize.name, shard=0))
        cluster.patch(RUNS, NAMESPACE, "edited", {"spec": {"categorize": {"maxTokens": 9}, "retries": {"perStage": 5}}})
        cluster.wait_for(lambda: condition(status_of(cluster, "edited"), "SpecAccepted").get("status") == "False", timeout=30)
    obj = status_of(cluster, "edited")
    accepted = condition(obj, "SpecAccepted")
    assert accepted["reason"] == "UnsafeEdit" and "categorize.maxTokens" in accepted["message"] and "retries" not in accepted["message"]
    assert condition(obj, "Stalled")["status"] == "True"  # GitOps tools see that Git's spec cannot apply
    assert accepted["observedGeneration"] == obj["metadata"]["generation"] == 2


def test_unreachable_storage_fails_the_run_with_storage_unavailable_after_the_grace_period(cluster, kubelet, make_run, monkeypatch):
    monkeypatch.setenv("SELFTAUGHT_STORAGE_GRACE_SECONDS", "0")
    run = make_run(storage="s3://nowhere/runs", endpoint="http://127.0.0.1:9")  # nothing listens there
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "offline"), NAMESPACE)
        cluster.wait_for(lambda: condition(status_of(cluster, "offline"), "Succeeded").get("status") == "False", timeout=60)
    failed = condition(status_of(cluster, "offline"), "Succeeded")
    assert failed["reason"] == "StorageUnavailable" and "s3://nowhere/runs" in failed["message"]
    assert jobs(cluster, "offline") == []


def test_the_operator_serves_prometheus_metrics(cluster, kubelet, make_run, bucket, s3_server, monkeypatch):
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SELFTAUGHT_METRICS_PORT", str(port))
    kubelet.pause()
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(make_run(storage=bucket, endpoint=s3_server), "measured"), NAMESPACE)
        cluster.wait_for(lambda: jobs(cluster, "measured"), timeout=30)
        def one_run_in_flight() -> str | None:
            # Pending until its first Job is seen active, Running after: either is right here
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            in_flight = [f'selftaught_runs{{phase="{phase}"}} 1.0' in text for phase in ("Pending", "Running")]
            return text if any(in_flight) else None

        text = cluster.wait_for(one_run_in_flight, timeout=30)
    assert 'selftaught_jobs_created_total{stage="categorize"}' in text
    for family in ("selftaught_stage_duration_seconds", "selftaught_job_failures_total", "selftaught_stage_retries_total", "selftaught_examples_kept", "selftaught_reconcile_seconds"):
        assert f"# TYPE {family}" in text
