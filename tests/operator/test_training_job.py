"""Multi-node training as the cluster runs it: one Indexed Job whose two "nodes" wait for index
0's DNS name, rendezvous through torchrun, and train with DeepSpeed ZeRO-3 over gloo."""

from __future__ import annotations

from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import build_job, build_service
from selftaught.method.prompts import judge_messages
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import sft_output
from selftaught.store.manifest import read_manifest
from tests.kube import job_condition
from tests.stores import publish

from .conftest import NAMESPACE


def test_a_two_node_training_job_rendezvouses_on_index_zero_and_publishes_one_checkpoint(cluster, kubelet, make_run, bucket, s3_server):
    run = make_run(name="gang", storage=bucket, endpoint=s3_server, train={"nodes": 2, "gpusPerNode": 1, "zeroStage": 3})
    storage = run.spec.storage.model_copy(update={"credentials_secret": "s3-credentials"})
    run = run.model_copy(
        update={"metadata": run.metadata.model_copy(update={"namespace": NAMESPACE}), "spec": run.spec.model_copy(update={"storage": storage})}
    )
    records = [
        {"id": f"{i}:AB", "messages": judge_messages(f"question {i}", "good answer", "bad answer"), "completion": "A is better. [[A]]", "winner": "A"}
        for i in range(8)
    ]
    publish(open_run_store(run), sft_output(1), records)
    ref = StageRef("train", 1)
    cluster.create("v1/services", build_service(run, ref, 0), NAMESPACE)
    job = cluster.create("batch/v1/jobs", build_job(run, ref, 0, OperatorConfig()), NAMESPACE)
    done = cluster.wait_for_job(NAMESPACE, job["metadata"]["name"], timeout=300)
    assert job_condition(done, "Complete"), [a.stderr_path for a in kubelet.attempts]
    assert sorted(index for _, index in kubelet.started) == [0, 1]  # both ranks ran, once each
    manifest = read_manifest(open_run_store(run), ref.manifest_key)
    assert manifest.counts["examples"] == 8 and manifest.summary["checkpoint"].endswith(f"iter-001/train/{manifest.attempt}/checkpoint")
    assert open_run_store(run).exists(f"iter-001/train/{manifest.attempt}/checkpoint/model.safetensors")
