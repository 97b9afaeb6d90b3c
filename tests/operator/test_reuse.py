"""Reuse across runs through the operator (`spec.reuse`, docs/experiments.md): runs in one bucket
on moto's S3 server, fake stages that publish an output each (tests/operator/fake_stage.py). What
is tested is what the operator does instead of a Job: S3's server-side copy, the events, the
status; the stage keys themselves are tests/unit/test_lineage.py's."""

from __future__ import annotations

from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import read_manifest
from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, events_of, finished, jobs_of

#: what a second recipe (another learning rate) shares with the first: everything before training
SHARED = {"categorize", "select", "pairs", "evaluate-0", "judge-1"}


def _in_cluster(run, name):
    """`run` as the operator sees it: its name, and the cluster's namespace (where its store is)."""
    return run.model_copy(update={"metadata": run.metadata.model_copy(update={"name": name, "namespace": NAMESPACE})})


def _stages_with_jobs(cluster, name):
    return {job["metadata"]["labels"]["selftaught.dev/stage"] for job in jobs_of(cluster, name)}


def _reused_events(cluster, name, reason="StageReused"):
    return {e["message"].split(":")[0]: e for e in events_of(cluster, name) if e["reason"] == reason}


def test_a_second_recipe_in_the_same_bucket_copies_the_shared_stages_in_s3_instead_of_running_them(cluster, fake_stages, make_run, bucket, s3_server):
    fake_stages.extra_env["FAKE_STAGE_OUTPUTS"] = "1"
    first = _in_cluster(make_run(storage=bucket, endpoint=s3_server, reuse={"enabled": True}), "recipe-a")
    second = _in_cluster(make_run(storage=bucket, endpoint=s3_server, reuse={"enabled": True}, train={"learningRate": 2e-4}), "recipe-b")
    again = _in_cluster(second, "recipe-c")  # recipe b once more, after one of recipe a's outputs was damaged
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(first, "recipe-a"), NAMESPACE)
        assert finished(cluster, "recipe-a")["phase"] == "Succeeded"
        cluster.create(RUNS, run_object(second, "recipe-b"), NAMESPACE)
        status = finished(cluster, "recipe-b")

        source, target = open_run_store(first), open_run_store(second)
        copied = {label: read_manifest(target, StageRef.parse(label).manifest_key) for label in SHARED}
        same = {key: target.read_bytes(key) == source.read_bytes(key) for manifest in copied.values() for key in manifest.outputs}
        pairs = read_manifest(source, StageRef("pairs").manifest_key)
        (damaged,) = pairs.outputs
        source.write_bytes(damaged, b"truncated")  # not the size its manifest promises
        cluster.create(RUNS, run_object(again, "recipe-c"), NAMESPACE)
        status_again = finished(cluster, "recipe-c")

    assert status["phase"] == "Succeeded", status
    assert _stages_with_jobs(cluster, "recipe-a") == SHARED | {"train-1", "evaluate-1"}
    assert _stages_with_jobs(cluster, "recipe-b") == {"train-1", "evaluate-1"}  # no Job for what was reused
    told = _reused_events(cluster, "recipe-b")
    assert set(told) == SHARED
    assert all(f"linked from {source.url()} (copied in the store)" in e["message"] and e["type"] == "Normal" for e in told.values())
    for label, manifest in copied.items():  # at the keys the stage would have written, by S3's CopyObject
        assert manifest.reused is not None and manifest.reused["from"] == source.url(), label
        assert manifest.outputs and manifest.outputs == read_manifest(source, StageRef.parse(label).manifest_key).outputs
    assert len(same) == len(SHARED) and all(same.values())  # the very bytes
    estimate = status["estimate"]
    assert set(estimate["reused"]) == SHARED
    assert estimate["savedGpuHours"] >= 4.0  # an hour each on a GPU or more: categorize, pairs, evaluate-0, judge-1

    # a source that is not what its manifest says: that stage runs here, the rest is still reused
    assert status_again["phase"] == "Succeeded", status_again
    assert _stages_with_jobs(cluster, "recipe-c") == {"pairs"}
    (warning,) = _reused_events(cluster, "recipe-c", "StageNotReused").values()
    assert warning["type"] == "Warning" and "pairs: not reused" in warning["message"] and damaged in warning["message"]
    assert set(_reused_events(cluster, "recipe-c")) == SHARED - {"pairs"} | {"train-1", "evaluate-1"}
    assert read_manifest(open_run_store(again), StageRef("pairs").manifest_key).reused is None
    assert set(status_again["estimate"]["reused"]) == SHARED - {"pairs"} | {"train-1", "evaluate-1"}
