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
from typing import Any

from selftaught.api.spec import API_GROUP, PodOverrides, SelfTaughtRun
from selftaught.controller.config import OperatorConfig
from selftaught.errors import EXIT_PERMANENT
from selftaught.pipeline.launch import MASTER_PORT, RUN_VARIABLE, stage_command, stage_document
from selftaught.pipeline.table import StageRef

LABEL_RUN = f"{API_GROUP}/run"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_ITERATION = f"{API_GROUP}/iteration"
LABEL_ATTEMPT = f"{API_GROUP}/attempt"
MANAGED_BY = "selftaught-operator"
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
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


def pod_overrides(run: SelfTaughtRun, ref: StageRef) -> PodOverrides:
    """The stage kind's defaults with the stage's own overrides on top, field by field."""
    scheduling = run.spec.scheduling
    base = getattr(scheduling, ref.kind)
    specific = getattr(scheduling.stages, ref.name)
    if specific is None:
        return base
    return base.model_copy(update={k: v for k, v in specific.model_dump().items() if v is not None})


def _gpus(run: SelfTaughtRun, ref: StageRef) -> int:
    return {"generation": run.spec.generation.tensor_parallel, "training": run.spec.train.gpus_per_node, "data": 0}[ref.kind]


def _env(run: SelfTaughtRun, document: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": RUN_VARIABLE, "value": document},
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
    if service is None:
        return stage_command(run.spec, ref, python="python"), []
    # every rank waits for index 0's DNS name, then joins the static rendezvous there
    launch = stage_command(run.spec, ref, python="python", master_addr="${MASTER_ADDR}", node_rank="${JOB_COMPLETION_INDEX}")
    script = (
        'until getent hosts "$MASTER_ADDR" >/dev/null; do echo "waiting for $MASTER_ADDR"; sleep 2; done; '
        + "exec " + " ".join(launch)  # plain tokens: the shell expands ${MASTER_ADDR} and the index
    )
    return ["sh", "-c", script], [{"name": "MASTER_ADDR", "value": f"{name}-0.{service}"}]


def service_name(run_name: str, ref: StageRef, attempt: int) -> str:
    return job_name(run_name, ref, attempt)


def build_job(run: SelfTaughtRun, ref: StageRef, attempt: int, config: OperatorConfig) -> dict[str, Any]:
    """The stage's Job; the caller adds the owner reference to the run."""
    name = job_name(run.metadata.name, ref, attempt)
    overrides = pod_overrides(run, ref)
    kind = ref.kind
    multi_node = needs_service(run, ref)
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
        "generate": config.generate_image,
        "train": config.train_image,
        "data": config.data_image or config.generate_image,
    }[ref.info.image]
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
                "env": _env(run, stage_document(run)) + extra_env,
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
        "metadata": {"name": name, "namespace": run.metadata.namespace, "labels": labels},
        "spec": job_spec,
    }


def build_service(run: SelfTaughtRun, ref: StageRef, attempt: int) -> dict[str, Any]:
    """Headless Service giving each training pod a DNS name (`<job>-<index>.<service>`)."""
    name = service_name(run.metadata.name, ref, attempt)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": run.metadata.namespace,
            "labels": stage_labels(run.metadata.name, ref, attempt),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # ranks resolve each other before they are "ready"
            "selector": {"batch.kubernetes.io/job-name": job_name(run.metadata.name, ref, attempt)},
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }


def needs_service(run: SelfTaughtRun, ref: StageRef) -> bool:
    return ref.kind == "training" and run.spec.train.nodes > 1
