"""Stage Jobs as a cluster would receive them: valid, labelled, placed and secured as the spec says."""

import json
import math
import re
import subprocess

import kubernetes_validate
import pytest

from selftaught.api.load import parse_run
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import (
    MAX_JOB_NAME,
    RENDEZVOUS_TIMEOUT_SECONDS,
    build_job,
    build_service,
    job_name,
    needs_service,
    pod_overrides,
    service_name,
    training_scratch,
)
from selftaught.pipeline.table import StageRef

from .test_spec import MINIMAL

CONFIG = OperatorConfig()


def _run(name="r1", **spec):
    return parse_run({**MINIMAL, "metadata": {"name": name, "namespace": "ml"}, "spec": {**MINIMAL["spec"], **spec}})


def _container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def _pod(job):
    return job["spec"]["template"]["spec"]


def _valid(obj):
    kubernetes_validate.validate(obj, "1.33", strict=True)
    return obj


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


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
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 16, 4)
    # one try per shard; a failed shard does not stop the running ones (the retry runs only the
    # unfinished shards); backoffLimit is left to Kubernetes' default, 0 would undo all of that
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (0, 16) and "backoffLimit" not in spec
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


def test_tracking_credentials_reach_the_stage_pods_from_their_secret_each_optional():
    run = _run(tracking={"mlflow": {"trackingUri": "https://mlflow.example"}, "credentialsSecret": "tracking"})
    env = {e["name"]: e for e in _container(build_job(run, StageRef("train", 1), 0, CONFIG))["env"]}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "WANDB_API_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "tracking", "key": key, "optional": True}
    assert "MLFLOW_TRACKING_TOKEN" not in _container(build_job(_run(), StageRef("train", 1), 0, CONFIG))["env"].__repr__()


@pytest.mark.parametrize("ref", [StageRef("train", 1), StageRef("judge", 1), StageRef("select")])
def test_program_errors_fail_fast_and_infrastructure_failures_are_not_counted(ref):
    job = _valid(build_job(_run(generation={"shards": 4}), ref, 0, CONFIG))
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [3]


def test_single_pod_jobs_fail_at_their_first_failed_pod():
    for ref in (StageRef("train", 1), StageRef("select")):
        spec = _valid(build_job(_run(), ref, 0, CONFIG))["spec"]
        assert spec["backoffLimit"] == 0 and "backoffLimitPerIndex" not in spec and "maxFailedIndexes" not in spec


def test_a_disrupted_multi_node_training_pod_fails_the_attempt():
    """A replacement pod could not rejoin the static torchrun rendezvous: the whole attempt fails
    and the operator starts a new one."""
    spec = _valid(build_job(_run(train={"nodes": 2}), StageRef("train", 1), 0, CONFIG))["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["values"] == [3]
    assert spec["backoffLimit"] == 0


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
    assert 'until getent hosts "$MASTER_ADDR"' in script and f"+ {RENDEZVOUS_TIMEOUT_SECONDS} ))" in script
    assert RENDEZVOUS_TIMEOUT_SECONDS == 600
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


def test_the_rendezvous_wait_gives_up_with_a_reason(tmp_path):
    """A rank whose index 0 never resolves (e.g. left unscheduled) stops waiting: exit 1 (retried,
    not permanent) and a termination message the operator reads."""
    job = build_job(_run(train={"nodes": 2}), StageRef("train", 1), 0, CONFIG)
    script = _container(job)["command"][2].replace(f"+ {RENDEZVOUS_TIMEOUT_SECONDS} ))", "+ 1 ))")
    message = tmp_path / "termination-log"
    env = {"PATH": "/usr/bin:/bin", "MASTER_ADDR": "r1-train-1-0-0.r1-train-1-0.invalid", "SELFTAUGHT_TERMINATION_MESSAGE_PATH": str(message)}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "gave up: r1-train-1-0-0.r1-train-1-0.invalid did not resolve" in result.stderr
    failure = json.loads(message.read_text())
    assert failure["reason"] == "RendezvousTimeout" and failure["permanent"] is False
    assert "r1-train-1-0-0.r1-train-1-0.invalid" in failure["message"]


@pytest.mark.parametrize("run_name", ["7b-judge", "r1", "0", "9" * 63, "a-very-long-run-name-that-goes-on-and-on-and-on-forever-x"])
def test_the_rendezvous_service_name_is_always_a_dns_1035_label(run_name):
    run = _run(name=run_name, train={"nodes": 2})
    ref = StageRef("train", 12)
    service = _valid(build_service(run, ref, 3))
    name = service["metadata"]["name"]
    assert name == service_name(run_name, ref, 3) and DNS_1035.match(name) and len(name) <= 63
    assert "ownerReferences" not in service["metadata"]  # the reconciler makes the Job its owner
    job = _valid(build_job(run, ref, 3, CONFIG))
    assert _pod(job)["subdomain"] == name
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{name}"
    if run_name[0].isalpha():
        assert name == job["metadata"]["name"]  # unchanged where it was valid already
    else:
        assert name == "st-" + job["metadata"]["name"]


def test_the_model_cache_is_a_bounded_emptydir_that_the_scheduler_accounts_for():
    run = _run()
    for ref, size in ((StageRef("judge", 1), "200Gi"), (StageRef("train", 1), "200Gi"), (StageRef("select"), "20Gi")):
        job = _valid(build_job(run, ref, 0, CONFIG))
        volumes = {v["name"]: v for v in _pod(job)["volumes"]}
        assert volumes["cache"] == {"name": "cache", "emptyDir": {"sizeLimit": size}}
        if ref.name == "train":  # and its /tmp, where the training state is written before it is uploaded
            scratch = training_scratch(run)
            assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": scratch}}
            size = f"{200 + int(scratch.removesuffix('Gi'))}Gi"
        else:
            assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
        assert _container(job)["resources"]["requests"]["ephemeral-storage"] == size
    job = _valid(build_job(_run(scheduling={"generation": {"cacheSize": "500Gi"}}), StageRef("pairs"), 0, CONFIG))
    assert {v["name"]: v for v in _pod(job)["volumes"]}["cache"]["emptyDir"] == {"sizeLimit": "500Gi"}
    assert _container(job)["resources"]["requests"]["ephemeral-storage"] == "500Gi"


@pytest.mark.parametrize(
    ("volume", "expected", "storage"),
    [
        ({"persistentVolumeClaim": {"claimName": "cache"}}, {"persistentVolumeClaim": {"claimName": "cache"}}, None),
        ({"emptyDir": {"sizeLimit": "1Ti"}}, {"emptyDir": {"sizeLimit": "1Ti"}}, "1Ti"),
        ({"emptyDir": {"medium": "Memory"}}, {"emptyDir": {"medium": "Memory", "sizeLimit": "200Gi"}}, None),
        ({"csi": {"driver": "example.csi.k8s.io"}}, {"csi": {"driver": "example.csi.k8s.io"}}, None),
        (
            {"ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "300Gi"}}}}}},
            {"ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "300Gi"}}}}}},
            None,
        ),
    ],
    ids=["pvc", "emptydir", "memory", "csi", "ephemeral"],
)
def test_the_model_cache_volume_is_the_one_source_the_run_names(volume, expected, storage):
    job = _valid(build_job(_run(scheduling={"generation": {"modelCacheVolume": volume}}), StageRef("judge", 1), 0, CONFIG))
    assert {v["name"]: v for v in _pod(job)["volumes"]}["cache"] == {"name": "cache", **expected}
    assert _container(job)["resources"]["requests"].get("ephemeral-storage") == storage


def test_stage_pods_have_no_api_token_no_service_links_and_a_user_name():
    job = _valid(build_job(_run(), StageRef("judge", 1), 0, CONFIG))
    pod = _pod(job)
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": CONFIG.run_as_user,
        "runAsGroup": CONFIG.run_as_user,
        "fsGroup": CONFIG.run_as_user,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    env = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert env["USER"] == env["LOGNAME"] == "selftaught" and env["HOME"] == "/tmp"


def test_the_ids_can_be_chosen_or_left_to_the_platform():
    run = _run(scheduling={"generation": {"securityContext": {"runAsUser": 2000, "fsGroup": 3000}}, "data": {"securityContext": {"platformAssigned": True}}})
    context = _pod(_valid(build_job(run, StageRef("judge", 1), 0, CONFIG)))["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (2000, 2000, 3000)
    context = _pod(_valid(build_job(run, StageRef("select"), 0, CONFIG)))["securityContext"]
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context)  # OpenShift's restricted-v2 SCC assigns them
    assert context["runAsNonRoot"] is True and context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_resource_quantities_may_be_numbers_and_are_rendered_as_strings():
    run = _run(scheduling={"generation": {"resources": {"requests": {"cpu": 4, "memory": "64Gi"}, "limits": {"memory": "64Gi", "cpu": 8}}}})
    resources = _container(_valid(build_job(run, StageRef("judge", 1), 0, CONFIG)))["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "64Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "200Gi"}
    assert resources["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    run = _run(scheduling={"generation": {"resources": {"requests": {"ephemeral-storage": "50Gi"}}}})
    assert _container(build_job(run, StageRef("judge", 1), 0, CONFIG))["resources"]["requests"]["ephemeral-storage"] == "50Gi"


def test_cluster_specific_pod_settings_reach_the_pod_and_merge_per_stage():
    run = _run(
        train={"nodes": 2},
        scheduling={
            "training": {
                "runtimeClassName": "nvidia",
                "schedulerName": "volcano",
                "podLabels": {"sidecar.istio.io/inject": "false", "team": "ml"},
                "podAnnotations": {"k8s.v1.cni.cncf.io/networks": "ib-net", "kueue.x-k8s.io/podset-preferred-topology": "rack"},
                "capabilities": ["IPC_LOCK"],  # accepted from older runs, and ignored
                "env": [{"name": "NCCL_DEBUG", "value": "INFO"}, {"name": "HF_HOME", "value": "/models/hf"}],
            },
            "stages": {"train": {"podLabels": {"team": "research"}, "schedulerName": "default-scheduler"}},
        },
    )
    job = _valid(build_job(run, StageRef("train", 1), 0, CONFIG))
    pod, template = _pod(job), job["spec"]["template"]["metadata"]
    assert pod["runtimeClassName"] == "nvidia" and pod["schedulerName"] == "default-scheduler"  # the stage's own wins
    assert template["labels"]["team"] == "research" and "sidecar.istio.io/inject" not in template["labels"]  # field by field
    assert template["labels"]["selftaught.dev/stage"] == "train-1"  # the operator's labels stay
    assert template["annotations"] == {"k8s.v1.cni.cncf.io/networks": "ib-net", "kueue.x-k8s.io/podset-preferred-topology": "rack"}
    # no effect for the non-root process (kubernetes/kubernetes#56374): not added, no privileged namespace needed
    assert _container(job)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = [(e["name"], e.get("value")) for e in _container(job)["env"]]
    names = [name for name, _ in env]
    assert len(names) == len(set(names)) and ("HF_HOME", "/models/hf") in env and ("NCCL_DEBUG", "INFO") in env
    assert names.index("HF_HOME") < names.index("NCCL_DEBUG")  # replaced in place, new ones after ours
    assert "MASTER_ADDR" in names and "SELFTAUGHT_RUN" in names
    judge = build_job(run, StageRef("judge", 1), 0, CONFIG)
    assert "runtimeClassName" not in _pod(judge) and "add" not in _container(judge)["securityContext"]["capabilities"]
    assert "annotations" not in judge["spec"]["template"]["metadata"]


def test_each_stage_kind_has_a_deadline_and_a_startup_timeout_a_run_can_change():
    run = _run(scheduling={"generation": {"activeDeadlineSeconds": 3 * 86400}, "stages": {"train": {"startupTimeoutSeconds": 7200}}})
    deadlines = {ref.kind: build_job(_run(), ref, 0, CONFIG)["spec"]["activeDeadlineSeconds"] for ref in (StageRef("judge", 1), StageRef("train", 1), StageRef("select"))}
    assert deadlines == {"generation": 86400, "training": 7 * 86400, "data": 6 * 3600}
    assert build_job(run, StageRef("judge", 1), 0, CONFIG)["spec"]["activeDeadlineSeconds"] == 3 * 86400
    assert pod_overrides(_run(), StageRef("judge", 1)).startup_timeout_seconds == 1800  # the operator enforces it
    assert pod_overrides(run, StageRef("train", 1)).startup_timeout_seconds == 7200
    assert pod_overrides(run, StageRef("select")).startup_timeout_seconds == 1800


def test_the_stage_pods_grace_period_is_the_one_decided_else_the_specs_else_kubernetes_default():
    ref = StageRef("train", 1)
    assert "terminationGracePeriodSeconds" not in _pod(build_job(_run(), ref, 0, CONFIG))
    assert _pod(build_job(_run(), ref, 0, CONFIG, grace_seconds=75))["terminationGracePeriodSeconds"] == 75
    spec = _run(scheduling={"training": {"terminationGracePeriodSeconds": 300}})
    assert _pod(build_job(spec, ref, 0, CONFIG))["terminationGracePeriodSeconds"] == 300
    _valid(build_job(_run(), ref, 0, CONFIG, grace_seconds=75))


def _qos(resources):
    """The pod's QoS class as the API server computes it for one container (GPUs aside)."""
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    if not {"cpu", "memory"} & (set(requests) | set(limits)):
        return "BestEffort"
    guaranteed = all(limits.get(k) and requests.get(k, limits[k]) == limits[k] for k in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


@pytest.mark.parametrize(("stage", "requests"), [(StageRef("judge", 1), ("4", "32Gi")), (StageRef("train", 1), ("8", "64Gi")), (StageRef("select"), ("1", "4Gi"))])
def test_a_stage_pod_without_requests_is_not_besteffort_the_first_evicted(stage, requests):
    resources = _container(_valid(build_job(_run(), stage, 0, CONFIG)))["resources"]
    assert (resources["requests"]["cpu"], resources["requests"]["memory"]) == requests and _qos(resources) == "Burstable"


def test_what_the_user_gives_for_cpu_or_memory_replaces_the_default_request():
    # a memory limit alone is the memory request (API defaulting): no default above it; the CPU keeps its default
    run = _run(scheduling={"training": {"resources": {"limits": {"memory": "16Gi"}}}, "generation": {"resources": {"requests": {"cpu": "500m"}}}})
    train = _container(_valid(build_job(run, StageRef("train", 1), 0, CONFIG)))["resources"]
    judge = _container(_valid(build_job(run, StageRef("judge", 1), 0, CONFIG)))["resources"]
    assert "memory" not in train["requests"] and train["requests"]["cpu"] == "8" and train["limits"]["memory"] == "16Gi"
    assert (judge["requests"]["cpu"], judge["requests"]["memory"]) == ("500m", "32Gi")


def test_a_training_pods_tmp_holds_its_share_of_the_training_state_and_the_checkpoint():
    """The train stage writes its resumable state and the final checkpoint to /tmp before they
    are uploaded: a bounded emptyDir the scheduler accounts for, sized from the seed over the nodes,
    small for LoRA, and the spec's size when given."""
    from selftaught.api.spec import Lora

    run = _run()
    spec = run.spec.model_copy(update={"models": run.spec.models.model_copy(update={"seed": run.spec.models.seed.model_copy(update={"source": "meta-llama/Meta-Llama-3-70B-Instruct"})})})
    one_node = run.model_copy(update={"spec": spec})
    four = run.model_copy(update={"spec": spec.model_copy(update={"train": spec.train.model_copy(update={"nodes": 4})})})
    lora = run.model_copy(update={"spec": spec.model_copy(update={"train": spec.train.model_copy(update={"lora": Lora()})})})
    # 70B: 16 bytes x 70e9 over the nodes, twice, + 140 GB of checkpoint, + 25 %
    assert training_scratch(one_node) == f"{math.ceil(1.25 * (2 * 16 * 70e9 + 2 * 70e9) / 2**30)}Gi"
    assert training_scratch(four) == f"{math.ceil(1.25 * (2 * 16 * 70e9 / 4 + 2 * 70e9) / 2**30)}Gi" == "815Gi"
    assert int(training_scratch(lora).removesuffix("Gi")) < 100
    scheduling = four.spec.scheduling.model_copy(update={"training": four.spec.scheduling.training.model_copy(update={"scratch_size": "300Gi"})})
    given = four.model_copy(update={"spec": four.spec.model_copy(update={"scheduling": scheduling})})
    job = _valid(build_job(given, StageRef("train", 1), 0, CONFIG))
    assert {v["name"]: v for v in _pod(job)["volumes"]}["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "300Gi"}}
    assert _container(job)["resources"]["requests"]["ephemeral-storage"] == "500Gi"  # with the 200Gi model cache
