"""Job and Service manifests for each stage, as plain dicts (pure: unit-tested on their own and
validated against the real Kubernetes schemas).

Generation stages are Indexed Jobs (one shard per completion index) on the vLLM image; training
is torchrun with DeepSpeed on the training image, one Indexed Job across nodes with a headless
Service for the rendezvous on index 0. Every Job has `backoffLimit: 0`: the operator owns
retries (with backoff, and re-running only unfinished shards), and the podFailurePolicy tells
infrastructure failures from program errors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from selftaught.api.spec import API_GROUP, API_VERSION, KIND, PodOverrides, SelfTaughtRun
from selftaught.controller.config import OperatorConfig
from selftaught.engines.launch import torchrun_command
from selftaught.errors import EXIT_PERMANENT
from selftaught.store.layout import StageRef

LABEL_RUN = f"{API_GROUP}/run"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_ITERATION = f"{API_GROUP}/iteration"
LABEL_ATTEMPT = f"{API_GROUP}/attempt"
MANAGED_BY = "selftaught-operator"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
MASTER_PORT = 29500
MAX_JOB_NAME = 52  # pods of an Indexed Job are <job>-<index>-<5 chars>; hostnames stop at 63


def job_name(run_name: str, ref: StageRef, attempt: int) -> str:
    """Deterministic: a restarted operator finds (or harmlessly re-creates) the same Job."""
    suffix = f"{ref.label}-{attempt}"
    name = f"{run_name}-{suffix}"
    if len(name) <= MAX_JOB_NAME:
        return name
    digest = hashlib.sha1(run_name.encode()).hexdigest()[:6]
    keep = MAX_JOB_NAME - len(suffix) - len(digest) - 2
    return f"{run_name[:keep].rstrip('-')}-{digest}-{suffix}"


def stage_labels(run_name: str, ref: StageRef, attempt: int) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "selftaught",
        "app.kubernetes.io/component": ref.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_RUN: run_name,
        LABEL_STAGE: ref.label,
        LABEL_ITERATION: str(ref.iteration),
        LABEL_ATTEMPT: str(attempt),
    }


def owner_reference(run: dict[str, Any]) -> dict[str, Any]:
    metadata = run["metadata"]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def stage_kind(ref: StageRef) -> str:
    return {"train": "training", "select": "data"}.get(ref.name, "generation")


def pod_overrides(run: SelfTaughtRun, ref: StageRef) -> PodOverrides:
    """The stage kind's defaults with the stage's own overrides on top, field by field."""
    scheduling = run.spec.scheduling
    base = getattr(scheduling, stage_kind(ref))
    specific = getattr(scheduling.stages, ref.name)
    if specific is None:
        return base
    return base.model_copy(update={k: v for k, v in specific.model_dump().items() if v is not None})


def _gpus(run: SelfTaughtRun, ref: StageRef) -> int:
    kind = stage_kind(ref)
    if kind == "generation":
        return run.spec.generation.tensor_parallel
    return run.spec.train.gpus_per_node if kind == "training" else 0


def _env(run: SelfTaughtRun, document: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "SELFTAUGHT_RUN", "value": document},
        {"name": "SELFTAUGHT_CACHE", "value": "/cache"},
        {"name": "HF_HOME", "value": "/cache/huggingface"},
        {"name": "HOME", "value": "/tmp"},  # caches of torch, triton, DeepSpeed ops
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "SELFTAUGHT_TERMINATION_MESSAGE_PATH", "value": "/dev/termination-log"},
        {
            "name": "JOB_COMPLETION_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}},
        },
    ]
    secret = run.spec.storage.credentials_secret
    if secret:
        for key, optional in (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_SESSION_TOKEN", True)):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}})
    if run.spec.storage.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": run.spec.storage.region})
    if run.spec.models.hf_token_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": run.spec.models.hf_token_secret, "key": "HF_TOKEN"}}})
    return env


def _command(run: SelfTaughtRun, ref: StageRef, name: str, service: str | None) -> tuple[list[str], list[dict[str, Any]]]:
    if ref.name != "train":
        return ["selftaught", "stage", ref.name, f"--iteration={ref.iteration}"], []
    train = run.spec.train
    if train.nodes == 1:
        return torchrun_command(train, ref.iteration, python="python", node_rank=0, master_port=MASTER_PORT), []
    # every rank waits for index 0's DNS name, then joins the static rendezvous there
    launch = torchrun_command(
        train, ref.iteration, python="python", master_addr="${MASTER_ADDR}", node_rank="${JOB_COMPLETION_INDEX}", master_port=MASTER_PORT
    )
    script = (
        'until getent hosts "$MASTER_ADDR" >/dev/null; do echo "waiting for $MASTER_ADDR"; sleep 2; done; '
        + "exec " + " ".join(launch)  # plain tokens: the shell expands ${MASTER_ADDR} and the index
    )
    return ["sh", "-c", script], [{"name": "MASTER_ADDR", "value": f"{name}-0.{service}"}]


def run_document(run: SelfTaughtRun) -> str:
    """What a stage pod needs to know: the run's identity and its (accepted) spec."""
    return json.dumps(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": run.metadata.name, "namespace": run.metadata.namespace},
            "spec": run.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        separators=(",", ":"),
    )


def service_name(run_name: str, ref: StageRef, attempt: int) -> str:
    return job_name(run_name, ref, attempt)


def build_job(run: SelfTaughtRun, owner: dict[str, Any], ref: StageRef, attempt: int, config: OperatorConfig) -> dict[str, Any]:
    name = job_name(run.metadata.name, ref, attempt)
    overrides = pod_overrides(run, ref)
    kind = stage_kind(ref)
    multi_node = ref.name == "train" and run.spec.train.nodes > 1
    service = service_name(run.metadata.name, ref, attempt) if multi_node else None
    labels = stage_labels(run.metadata.name, ref, attempt)
    if overrides.queue_name:
        labels[KUEUE_QUEUE] = overrides.queue_name
    command, extra_env = _command(run, ref, name, service)
    gpus = _gpus(run, ref)
    resources = {section: dict(values) for section, values in (overrides.resources or {}).items()}
    if gpus:
        for section in ("requests", "limits"):
            resources.setdefault(section, {})["nvidia.com/gpu"] = str(gpus)
    image = overrides.image or {
        "generation": config.generate_image,
        "training": config.train_image,
        "data": config.data_image or config.generate_image,
    }[kind]
    completions = {
        "generation": run.spec.generation.shards,
        "training": run.spec.train.nodes,
        "data": 1,
    }[kind]
    parallelism = min(run.spec.generation.parallelism, completions) if kind == "generation" else completions
    volumes = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", **(overrides.model_cache_volume or {"emptyDir": {}})},
    ]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": "/cache"}]
    if kind != "data":
        shm = {"medium": "Memory", **({"sizeLimit": overrides.shm_size} if overrides.shm_size else {})}
        volumes.append({"name": "dshm", "emptyDir": shm})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_user,
            "fsGroup": config.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "stage",
                "image": image,
                "command": command,
                "env": _env(run, run_document(run)) + extra_env,
                "resources": resources,
                "volumeMounts": mounts,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                **({"ports": [{"containerPort": MASTER_PORT, "name": "rendezvous"}]} if multi_node else {}),
            }
        ],
        "volumes": volumes,
    }
    optional = {
        "nodeSelector": overrides.node_selector,
        "tolerations": overrides.tolerations,
        "affinity": overrides.affinity,
        "priorityClassName": overrides.priority_class_name,
        "serviceAccountName": overrides.service_account_name,
        "imagePullSecrets": [{"name": n} for n in overrides.image_pull_secrets] if overrides.image_pull_secrets else None,
        "subdomain": service,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": completions,
        "parallelism": parallelism,
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                # preemption, node drain or loss: not the program's fault, the pod is replaced
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                # bad input, missing model, no training data: retrying cannot help
                {"action": "FailJob", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [EXIT_PERMANENT]}},
            ]
        },
        "ttlSecondsAfterFinished": overrides.ttl_seconds_after_finished
        if overrides.ttl_seconds_after_finished is not None
        else config.job_ttl_seconds,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if overrides.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = overrides.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": run.metadata.namespace, "labels": labels, "ownerReferences": [owner]},
        "spec": job_spec,
    }


def build_service(run: SelfTaughtRun, owner: dict[str, Any], ref: StageRef, attempt: int) -> dict[str, Any]:
    """Headless Service giving each training pod a DNS name (`<job>-<index>.<service>`)."""
    name = service_name(run.metadata.name, ref, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": run.metadata.namespace,
            "labels": stage_labels(run.metadata.name, ref, attempt),
            "ownerReferences": [owner],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # ranks resolve each other before they are "ready"
            "selector": {"batch.kubernetes.io/job-name": job_name(run.metadata.name, ref, attempt)},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }


def needs_service(run: SelfTaughtRun, ref: StageRef) -> bool:
    return ref.name == "train" and run.spec.train.nodes > 1
