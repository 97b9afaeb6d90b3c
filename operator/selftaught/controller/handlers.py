"""Kopf handlers: thin triggers. Every event on a run, on one of its Jobs or on its judge's server
calls the same level-triggered reconcile; there is no edge-triggered state to lose.

The stage Jobs and the servers' Deployments are kept in Kopf indexes (fed by their watches,
complete before any handler runs), so a reconcile never lists them. Stage pods are watched for
one thing, how they stop: a disruption (an evicted pod, a lost node) leaves no trace on its Job
once the pod is replaced and gone (`controller/disruptions.py`). The periodic fresh re-read
is the reconciler's own work queue, not a `@kopf.timer`: Kopf puts a finalizer on every object
with a timer, and a run could then not be deleted while the operator is down."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from selftaught.api.spec import API_GROUP, API_VERSION, PLURAL
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import LABEL_RUN, LABEL_STAGE, MANAGED_BY
from selftaught.controller.reconciler import Reconciler
from selftaught.controller.serving import COMPONENT

CONFIG = OperatorConfig.from_env()
STAGE_JOBS = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_RUN: kopf.PRESENT}
SERVERS = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": COMPONENT, LABEL_RUN: kopf.PRESENT}
STAGE_PODS = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_RUN: kopf.PRESENT, LABEL_STAGE: kopf.PRESENT}


def _slim_spec(spec: Any) -> dict[str, Any]:
    """Suspended (Kueue), and for a multi-node training (its pods' subdomain) how many ranks it runs."""
    slim: dict[str, Any] = {"suspend": bool(spec.get("suspend"))}
    if subdomain := ((spec.get("template") or {}).get("spec") or {}).get("subdomain"):
        slim.update(parallelism=spec.get("parallelism"), template={"spec": {"subdomain": subdomain}})
    return slim


def _slim(body: kopf.Body) -> dict[str, Any]:
    """The part of a Job the operator reads: the index holds every stage Job of the cluster, so
    it keeps no pod template, no env, no full body."""
    meta, status = body.metadata, body.status or {}
    return {
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "labels": dict(meta.labels),
            "ownerReferences": [{"uid": ref.get("uid")} for ref in body.get("metadata", {}).get("ownerReferences") or []],
        },
        "spec": _slim_spec(body.spec or {}),
        "status": {
            "conditions": list(status.get("conditions") or []),
            **{key: status[key] for key in ("startTime", "active", "ready", "failed", "succeeded") if key in status},
        },
    }


def _slim_server(body: kopf.Body) -> dict[str, Any]:
    """The part of a server's Deployment the operator reads: what it serves (annotations), its
    version (for a replacement) and how many of its pods are ready."""
    meta, status = body.metadata, body.status or {}
    return {
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": body.get("metadata", {}).get("resourceVersion"),
            "annotations": dict(meta.annotations),
            "ownerReferences": [{"uid": ref.get("uid")} for ref in body.get("metadata", {}).get("ownerReferences") or []],
        },
        "status": {key: status[key] for key in ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas", "conditions") if key in status},
    }


@kopf.index("apps", "v1", "deployments", labels=SERVERS)
def servers(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels[LABEL_RUN]): _slim_server(body)}


@kopf.index("batch", "v1", "jobs", labels=STAGE_JOBS)
def stage_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels[LABEL_RUN]): _slim(body)}


def jobs_of(index: kopf.Index) -> Any:
    def lookup(namespace: str, run: str) -> list[dict[str, Any]]:
        for _ in range(3):  # Kopf updates the index on its own loop: retry a torn read
            try:
                return list(index.get((namespace, run), []))
            except RuntimeError:  # "dictionary changed size during iteration"
                continue
        return list(index.get((namespace, run), []))

    return lookup


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, stage_jobs: kopf.Index, servers: kopf.Index, **_: Any) -> None:
    """One reconciler (and its caches) per operator process."""
    settings.execution.max_workers = CONFIG.workers
    settings.scanning.disabled = True  # no CRD or namespace watching: least-privilege RBAC
    settings.posting.level = logging.WARNING  # Kopf's own events: warnings and errors only; ours are richer
    # a big cluster has many Jobs that are not ours: filter on the server, list in pages
    settings.watching.label_selectors["batch", "jobs"] = f"app.kubernetes.io/managed-by={MANAGED_BY}"
    settings.watching.label_selectors["apps", "deployments"] = f"app.kubernetes.io/managed-by={MANAGED_BY}"
    settings.watching.label_selectors["v1", "pods"] = f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_STAGE}"
    settings.watching.chunk_size = 500
    check_crd_installed()
    memo.reconciler = Reconciler(CONFIG, jobs=jobs_of(stage_jobs), servers=jobs_of(servers))
    memo.reconciler.start()
    metrics.serve(CONFIG.metrics_port)


def check_crd_installed() -> None:
    """Without the CRD the operator would serve nothing while looking healthy: exit instead."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    missing = (
        f"the {PLURAL}.{API_GROUP} CustomResourceDefinition ({API_VERSION}) is not installed: install it (helm install, "
        "or kubectl apply -f manifests/crd.yaml), then restart the operator"
    )
    try:  # discovery: every authenticated client may read it, no extra RBAC
        served = client.CustomObjectsApi().get_api_resources(API_GROUP, API_VERSION)
    except ApiException as error:
        if error.status == 404:
            raise kopf.PermanentError(missing) from None
        raise
    if not any(resource.name == PLURAL for resource in served.resources or []):
        raise kopf.PermanentError(missing)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.stop()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def run_changed(event: dict[str, Any], name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo.reconciler.intake.run_deleted(namespace, name)
    else:
        memo.reconciler.intake.run_changed(event["object"])


@kopf.on.event("batch", "v1", "jobs", labels=STAGE_JOBS)
def job_changed(event: dict[str, Any], labels: kopf.Labels, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.intake.job_changed(namespace, labels[LABEL_RUN], event.get("object"), event.get("type"))


@kopf.on.event("v1", "pods", labels=STAGE_PODS)
def pod_changed(event: dict[str, Any], labels: kopf.Labels, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.intake.pod_changed(namespace, labels[LABEL_RUN], event.get("object"), event.get("type"))


@kopf.on.event("apps", "v1", "deployments", labels=SERVERS)
def server_changed(labels: kopf.Labels, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.intake.job_changed(namespace, labels[LABEL_RUN])
