"""Stage Jobs as a cluster would receive them: valid, labelled, placed and secured as the spec says."""

import kubernetes_validate
import pytest

from selftaught.api.load import parse_run
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import MAX_JOB_NAME, build_job, build_service, job_name, needs_service
from selftaught.pipeline.table import StageRef

from .test_spec import MINIMAL

CONFIG = OperatorConfig()


def _run(name="r1", **spec):
    return parse_run({**MINIMAL, "metadata": {"name": name, "namespace": "ml"}, "spec": {**MINIMAL["spec"], **spec}})


def _container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("ref", [StageRef("categorize"), StageRef("select"), StageRef("judge", 2), StageRef("train", 1), StageRef("evaluate", 0)])
def test_every_stage_job_validates_against_the_kubernetes_schema(ref):
    run = _run(train={"nodes": 2}, scheduling={"training": {"queueName": "gpu"}})
    kubernetes_validate.validate(build_job(run, ref, 0, CONFIG), "1.33", strict=True)
    if needs_service(run, ref):
        kubernetes_validate.validate(build_service(run, ref, 0), "1.33", strict=True)


def test_a_generation_job_is_indexed_by_shard_on_the_vllm_image_with_gpus_for_tensor_parallel():
    run = _run(generation={"shards": 16, "parallelism": 4, "tensorParallel": 8})
    job = build_job(run, StageRef("judge", 2), 1, CONFIG)
    spec, container = job["spec"], _container(job)
    assert job["metadata"]["name"] == "r1-judge-2-1"
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["backoffLimit"]) == ("Indexed", 16, 4, 0)
    assert container["image"] == CONFIG.generate_image
    assert container["command"] == ["python", "-m", "selftaught", "stage", "judge", "--iteration=2"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory" and "cache" in volumes
    assert job["metadata"]["labels"]["selftaught.dev/attempt"] == "1"
    assert "ownerReferences" not in job["metadata"]  # the reconciler adopts it (kopf.append_owner_reference)


def test_pods_run_as_non_root_without_privilege_and_secrets_come_from_secret_refs():
    run = _run(storage={"uri": "s3://b/runs", "credentialsSecret": "s3"}, models={"seed": {"source": "m"}, "hfTokenSecret": "hf"})
    job = build_job(run, StageRef("pairs"), 0, CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = _container(job)["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    env = {e["name"]: e for e in _container(job)["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf"
    assert '"credentialsSecret":"s3"' in env["SELFTAUGHT_RUN"]["value"]


def test_program_errors_fail_fast_and_infrastructure_failures_are_not_counted():
    rules = build_job(_run(), StageRef("train", 1), 0, CONFIG)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [3]


def test_multi_node_training_is_one_indexed_job_with_a_rendezvous_on_index_zero():
    run = _run(train={"nodes": 4, "gpusPerNode": 8})
    job = build_job(run, StageRef("train", 3), 0, CONFIG)
    service = build_service(run, StageRef("train", 3), 0)
    pod = job["spec"]["template"]["spec"]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (4, 4)  # the whole gang at once
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert env["MASTER_ADDR"] == "r1-train-3-0-0.r1-train-3-0"
    script = _container(job)["command"][2]
    assert script.startswith('until getent hosts "$MASTER_ADDR"')
    assert "--nnodes=4 --nproc-per-node=8 --node-rank=${JOB_COMPLETION_INDEX} --master-addr=${MASTER_ADDR}" in script
    assert _container(job)["resources"]["limits"]["nvidia.com/gpu"] == "8" and _container(job)["image"] == CONFIG.train_image


def test_scheduling_merges_stage_overrides_over_the_stage_kind_defaults():
    run = _run(
        scheduling={
            "generation": {"nodeSelector": {"gpu": "h100"}, "priorityClassName": "batch", "queueName": "gen"},
            "stages": {"judge": {"priorityClassName": "urgent", "tolerations": [{"key": "gpu", "operator": "Exists"}], "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60}},
        }
    )
    judge = build_job(run, StageRef("judge", 1), 0, CONFIG)
    pod = judge["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["priorityClassName"] == "urgent" and pod["tolerations"]
    assert judge["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gen"
    assert (judge["spec"]["activeDeadlineSeconds"], judge["spec"]["ttlSecondsAfterFinished"]) == (3600, 60)
    categorize = build_job(run, StageRef("categorize"), 0, CONFIG)["spec"]["template"]["spec"]
    assert categorize["priorityClassName"] == "batch" and "tolerations" not in categorize


def test_job_names_are_deterministic_and_short_enough_for_pod_hostnames():
    long_name = "a-very-long-run-name-that-goes-on-and-on-and-on-forever-x"
    name = job_name(long_name, StageRef("evaluate", 12), 3)
    assert len(name) <= MAX_JOB_NAME and name.endswith("-evaluate-12-3")
    assert name == job_name(long_name, StageRef("evaluate", 12), 3)
    assert job_name(long_name + "y", StageRef("evaluate", 12), 3) != name
