"""Runs that train by DPO or train a pointwise judge, through the operator (fake stages: what is
tested is the spec's way through the API server and into every stage pod)."""

from __future__ import annotations

import json

from tests.kube import run_operator

from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, condition, finished, jobs_of, quick


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
