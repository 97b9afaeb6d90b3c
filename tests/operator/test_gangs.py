"""A multi-node training whose last rank finds no node: the ready ranks hold their GPUs in
torch's rendezvous. The run names the rank and why within a minute, and fails the attempt after
the training's `startupTimeoutSeconds` from that rank's creation, instead of waiting for the
rendezvous to time out without a word."""

from __future__ import annotations

from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, finished, quick, status_of

GPU_NODE = {"allocatable": {"nvidia.com/gpu": "1"}}


def test_a_rank_that_finds_no_node_in_a_gang_whose_other_ranks_run_is_named_and_bounded(cluster, fake_stages, make_run, tmp_path):
    fake_stages.nodes = [{"name": f"gpu-{i}", **GPU_NODE} for i in range(3)]  # three GPUs for a four-rank gang
    fake_stages.extra_env["FAKE_STAGE_SECONDS"] = "train=120"  # the ranks wait in the rendezvous
    run = quick(make_run, tmp_path, train={"nodes": 4, "gpusPerNode": 1}, scheduling={"training": {"startupTimeoutSeconds": 8}}, retries={"perStage": 0})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "gang"), NAMESPACE)
        waiting = cluster.wait_for(lambda: "rank 3 of 4" in status_of(cluster, "gang").get("message", "") and status_of(cluster, "gang"), timeout=90)
        status = finished(cluster, "gang", timeout=60)
    assert condition({"status": waiting}, "Reconciling")["reason"] == "Unschedulable"
    assert "3 ranks ready" in waiting["message"] and "Insufficient nvidia.com/gpu" in waiting["message"]
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "Unschedulable"
    assert "did not start within 8s" in status["message"] and "rank 3 of 4" in status["message"]
    assert status["attempts"]["train-1"]["attempts"] == 1
