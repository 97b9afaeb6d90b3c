"""A GPU stage whose pod got GPUs that CUDA cannot use (here: a CPU machine, as a node without
the nvidia runtime or with a too old driver is) fails at its start with `CudaUnavailable` and the
runtime's words — not days of training on CPU holding the GPUs. The stage process is the real one."""

from __future__ import annotations

from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, finished


def test_a_gpu_stage_whose_cuda_is_unusable_fails_at_once_with_the_reason_and_no_retry(cluster, kubelet, make_run, tmp_path):
    del kubelet.extra_env["SELFTAUGHT_GPUS"]  # the pod's own request decides: one GPU per categorize pod
    run = make_run(storage=str(tmp_path / "store"), retries={"perStage": 2, "backoffSeconds": 1})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "nocuda"), NAMESPACE)
        status = finished(cluster, "nocuda", timeout=120)
    assert status["phase"] == "Failed" and condition({"status": status}, "Succeeded")["reason"] == "CudaUnavailable"
    message = status["message"]
    assert "the pod asked for 1 GPU(s) but CUDA is not available" in message
    assert "NVIDIA_VISIBLE_DEVICES=GPU-" in message  # what the device plugin gave the container
    assert status["attempts"]["categorize"]["attempts"] == 1  # permanent: not retried on the same story
    assert kubelet.attempts[0].exit_code == 3
