"""A stage pod bound to a node that never gets past ContainerCreating (a volume that does not
mount or attach, a Multus network that does not exist) holds its GPUs and quota doing nothing:
the run names the kubelet's reason within a minute and fails the attempt after the stage kind's
`startupTimeoutSeconds`, not after its deadline of days."""

from __future__ import annotations

from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, events_of, finished, quick, status_of


def test_a_pod_whose_network_cannot_be_set_up_is_diagnosed_then_failed_after_the_startup_timeout(cluster, fake_stages, make_run, tmp_path):
    fake_stages.hold_creating("sandbox-categorize", reason="FailedCreatePodSandBox")
    run = quick(make_run, tmp_path, scheduling={"generation": {"startupTimeoutSeconds": 8}}, retries={"perStage": 0})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "sandbox"), NAMESPACE)
        waiting = cluster.wait_for(lambda: "ContainerCreating" in status_of(cluster, "sandbox").get("message", "") and status_of(cluster, "sandbox"), timeout=60)
        status = finished(cluster, "sandbox")
    assert condition({"status": waiting}, "Reconciling")["reason"] == "FailedCreatePodSandBox"
    assert 'network-attachment-definitions.k8s.cni.cncf.io "ib-net" not found' in waiting["message"]
    assert waiting["active"][0]["waiting"].startswith("FailedCreatePodSandBox")
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "FailedCreatePodSandBox"
    assert "did not start within 8s" in status["message"]
    assert [e["reason"] for e in events_of(cluster, "sandbox")].count("StageNotStarting") == 1


def test_a_volume_that_attaches_at_last_lets_the_run_go_on(cluster, fake_stages, make_run, tmp_path):
    fake_stages.hold_creating("attach-categorize", reason="FailedAttachVolume")
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path), "attach"), NAMESPACE)
        waiting = cluster.wait_for(lambda: "Multi-Attach error" in status_of(cluster, "attach").get("message", "") and status_of(cluster, "attach"), timeout=60)
        fake_stages.release_creating()  # the other pod let the ReadWriteOnce volume go
        status = finished(cluster, "attach")
    assert condition({"status": waiting}, "Reconciling")["reason"] == "FailedAttachVolume"
    assert status["phase"] == "Succeeded" and status["attempts"]["categorize"]["attempts"] == 1
