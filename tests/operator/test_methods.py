"""Runs that train by DPO or GRPO, train a pointwise judge or LoRA adapters, through the operator
(fake stages: what is tested is the spec's way through the API server and into every stage pod)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from selftaught.controller.config import OperatorConfig
from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, finished, jobs_of, quick, status_of


def _run_document(job: dict) -> dict:
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["SELFTAUGHT_RUN"])["spec"]


def test_dpo_and_pointwise_runs_reach_their_stage_pods_and_the_impossible_mix_is_refused(cluster, fake_stages, make_run, tmp_path):
    dpo = quick(make_run, tmp_path, train={"method": "dpo", "dpo": {"beta": 0.2, "nllWeight": 0.5}})
    rated = quick(make_run, tmp_path, judge={"format": "pointwise"})
    mixed = run_object(quick(make_run, tmp_path), "mixed")
    mixed["spec"]["train"]["method"], mixed["spec"]["judge"]["format"] = "dpo", "pointwise"
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(dpo, "dpo"), NAMESPACE)
        cluster.create(RUNS, run_object(rated, "rated"), NAMESPACE)
        cluster.create(RUNS, mixed, NAMESPACE)
        assert finished(cluster, "dpo")["phase"] == "Succeeded"
        assert finished(cluster, "rated")["phase"] == "Succeeded"
        refused = cluster.wait_for(lambda: condition(cluster.get(RUNS, NAMESPACE, "mixed"), "SpecAccepted").get("status") == "False" and cluster.get(RUNS, NAMESPACE, "mixed"), timeout=30)
    by_stage = {(name, j["metadata"]["labels"]["selftaught.dev/stage"]): j for name in ("dpo", "rated") for j in jobs_of(cluster, name)}
    for stage in ("judge-1", "train-1"):  # the judge samples for DPO; the trainer runs DPOTrainer
        spec = _run_document(by_stage[("dpo", stage)])
        assert spec["train"]["method"] == "dpo" and spec["train"]["dpo"]["beta"] == 0.2 and spec["train"]["dpo"]["nllWeight"] == 0.5
    for stage in ("judge-1", "evaluate-1"):  # the judge rates; the evaluation rates too (evaluate.mode auto)
        assert _run_document(by_stage[("rated", stage)])["judge"]["format"] == "pointwise"
    message = condition(refused, "SpecAccepted")["message"]
    assert "train.method dpo" in message and "judge.format" in message and jobs_of(cluster, "mixed") == []


def test_a_grpo_run_trains_in_one_job_per_iteration_on_the_rl_image_and_its_status_shows_reward_and_accuracy(cluster, fake_stages, make_run, tmp_path):
    fake_stages.extra_env["FAKE_STAGE_SECONDS"] = "train=8"  # each train stage writes "half done, reward 1.5" first
    grpo = {"method": "grpo", "gpusPerNode": 2, "grpo": {"groupSize": 4, "rewards": {"consistency": 0.5}}}
    run = quick(make_run, tmp_path, iterations=2, train=grpo, scheduling={"training": {"resources": {"requests": {"cpu": "8", "memory": "64Gi"}}}})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "grpo"), NAMESPACE)
        running = cluster.wait_for(lambda: (s := status_of(cluster, "grpo")).get("progress", {}).get("reward") is not None and s, timeout=90)
        status = finished(cluster, "grpo", timeout=120)
        report = cluster.wait_for(lambda: (path := Path(status["report"])).is_file() and path, timeout=120)
    assert status["phase"] == "Succeeded", status
    assert set(status["attempts"]) == {"categorize", "select", "pairs", "train-1", "evaluate-1", "train-2", "evaluate-2"}  # no judge stage
    jobs = {j["metadata"]["labels"]["selftaught.dev/stage"]: j for j in jobs_of(cluster, "grpo")}
    assert not any(stage.startswith("judge") for stage in jobs)
    for stage in ("train-1", "train-2"):
        job = jobs[stage]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["image"] == OperatorConfig().rl_image  # vLLM for the rollouts beside TRL and DeepSpeed
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == "2" and requests["cpu"] == "8" and requests["memory"] == "64Gi"
        assert "torch.distributed.run" in container["command"] and "--nproc-per-node=2" in container["command"]
        assert container["command"][-3:] == ["stage", "train", f"--iteration={stage[-1]}"]
        assert job["spec"]["completions"] == 1 and job["spec"]["backoffLimit"] == 0
        spec = _run_document(job)
        assert spec["train"]["method"] == "grpo" and spec["train"]["grpo"]["groupSize"] == 4
    progress = running["progress"]
    assert progress["stage"] in ("train-1", "train-2") and progress["unit"] == "steps"
    assert (progress["reward"], progress["accuracy"]) == (1.5, 0.75)
    iterations = {row["iteration"]: row for row in status["iterations"]}
    assert (iterations[1]["reward"], iterations[1]["trainAccuracy"]) == (1.25, 0.625) and "tried" not in iterations[1]
    assert '<img id="plot-rewards"' in report.read_text() and 'id="plot-keep"' not in report.read_text()


def test_a_lora_run_trains_in_its_usual_jobs_its_status_names_each_adapters_seed_and_its_estimate_fits_a_70b_on_one_node(
    cluster, fake_stages, make_run, tmp_path
):
    """LoRA changes what the train stage does, not the Jobs: one training Job per iteration on the train
    image, `gpusPerNode` GPUs, torchrun around `selftaught stage train`; every stage pod reads
    `train.lora` from its run document (judge and evaluate load each adapter on the seed). The
    estimate in the status is the train stage's memory rule on a 70B seed over one node of 8 x 80 GB."""
    train = {"lora": {"rank": 16}, "nodes": 1, "gpusPerNode": 8, "zeroStage": 3, "bf16": True, "gradientCheckpointing": None, "microBatchSize": 1, "maxSeqLen": 4096}
    run = quick(make_run, tmp_path, iterations=2, train=train, estimate={"seedSize": {"total": 70}, "gpu": "H100", "instructions": 50})
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "lora"), NAMESPACE)
        status = finished(cluster, "lora", timeout=120)
    assert status["phase"] == "Succeeded", status
    jobs = {j["metadata"]["labels"]["selftaught.dev/stage"]: j for j in jobs_of(cluster, "lora")}
    for stage in ("train-1", "train-2"):
        (container,) = jobs[stage]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == OperatorConfig().train_image and container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert "torch.distributed.run" in container["command"] and "--nproc-per-node=8" in container["command"]
        assert container["command"][-3:] == ["stage", "train", f"--iteration={stage[-1]}"]
    for stage in ("judge-1", "train-1", "evaluate-1", "judge-2", "evaluate-2"):
        assert _run_document(jobs[stage])["train"]["lora"]["rank"] == 16
    seed = run.spec.models.seed.source
    iterations = {row["iteration"]: row for row in status["iterations"]}
    for iteration in (1, 2):
        assert iterations[iteration]["adapterOf"] == seed and iterations[iteration]["checkpoint"].endswith(f"iter-00{iteration}/train/checkpoint")
    message = status["estimate"]["message"]
    fits = re.match(r"train: ~([\d.]+) of 80 GiB per GPU over 8 GPUs \(LoRA rank 16, 207M trainable, on the frozen 70B seed in bf16 sharded by ZeRO-3; gradient checkpointing (on|off)\): fits", message)
    assert fits is not None, message
    assert 17.5 < float(fits.group(1)) < 0.85 * 80  # the base's 140 GB over 8 GPUs, adapters, activations, overhead
