"""What a user reads when a stage pod fails without a word of its own: the line that says what went
wrong (the end of its log, not the start), a SIGKILL named as one unless the kubelet says the memory
limit did it, and the pod's own reason when the kubelet refused or evicted it.

The stages are fakes (tests/operator/fake_stage.py); the test kubelet fails pods as a real one does."""

from __future__ import annotations

from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, events_of, finished, quick

LAST_LINE = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def failed_run(cluster, make_run, tmp_path, name):
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(quick(make_run, tmp_path, retries={"perStage": 0}), name), NAMESPACE)
        status = finished(cluster, name)
    assert status["phase"] == "Failed", status
    return status


def test_a_crash_with_a_long_log_keeps_its_last_line_in_the_condition_the_last_failure_and_the_event(cluster, fake_stages, make_run, tmp_path):
    log = "\n".join(f"[rank0] step {i}: loss 0.{i:04d}, a long line of training chatter" for i in range(60)) + "\n" + LAST_LINE
    fake_stages.fail_next("tail-categorize", exit_code=1, message=log)
    status = failed_run(cluster, make_run, tmp_path, "tail")
    assert LAST_LINE in condition({"status": status}, "Succeeded")["message"]
    assert LAST_LINE in status["attempts"]["categorize"]["lastFailure"]["message"]
    assert status["attempts"]["categorize"]["lastFailure"]["message"].startswith("exit code 1")  # and what failed, first
    failed = [e for e in events_of(cluster, "tail") if e["reason"] == "RunFailed"]
    assert failed and LAST_LINE in failed[0]["message"]


def test_exit_137_is_out_of_memory_only_when_the_kubelet_says_oomkilled(cluster, fake_stages, make_run, tmp_path):
    fake_stages.fail_next("sigkill-categorize", exit_code=137, message="")  # a liveness probe, a preStop: reason Error
    status = failed_run(cluster, make_run, tmp_path, "sigkill")
    assert condition({"status": status}, "Succeeded")["reason"] == "StageCrashed"
    assert "exit code 137 (SIGKILL, not the memory limit" in status["message"]


def test_a_pod_the_kubelet_refuses_at_admission_fails_with_the_kubelets_reason(cluster, fake_stages, make_run, tmp_path):
    fake_stages.reject_next("nogpu-categorize", reason="OutOfnvidia.com/gpu")  # a device plugin not registered yet
    status = failed_run(cluster, make_run, tmp_path, "nogpu")
    assert condition({"status": status}, "Succeeded")["reason"] == "OutOfnvidia.com/gpu"
    assert "Pod was rejected: Node didn't have enough resource: nvidia.com/gpu" in status["message"]
