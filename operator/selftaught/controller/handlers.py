"""Kopf handlers: thin triggers. Every event on a run or on one of its Jobs calls the same
level-triggered reconcile; there is no edge-triggered state to lose.

The stage Jobs are kept in a Kopf index (fed by the Job watch, complete before any handler
runs), so a reconcile never lists Jobs. The periodic fresh re-read is the reconciler's own work
queue, not a `@kopf.timer`: Kopf puts a finalizer on every object with a timer, and a run could
then not be deleted while the operator is down."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from selftaught.api.spec import API_GROUP, API_VERSION, PLURAL
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import LABEL_RUN, MANAGED_BY
from selftaught.controller.reconciler import Reconciler

CONFIG = OperatorConfig.from_env()
STAGE_JOBS = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_RUN: kopf.PRESENT}


def _slim(body: kopf.Body) -> dict[str, Any]:
    """The part of a Job the operator reads: the index holds every stage Job of the cluster."""
    meta = body.metadata
    return {
        "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid, "labels": dict(meta.labels)},
        "status": {"conditions": list((body.status or {}).get("conditions") or [])},
    }


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
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, stage_jobs: kopf.Index, **_: Any) -> None:
    """One reconciler (and its caches) per operator process."""
    settings.execution.max_workers = CONFIG.workers
    settings.scanning.disabled = True  # no CRD or namespace watching: least-privilege RBAC
    settings.posting.level = logging.WARNING  # Kopf's own events: warnings and errors only; ours are richer
    memo.reconciler = Reconciler(CONFIG, jobs=jobs_of(stage_jobs))
    memo.reconciler.start()
    metrics.serve(CONFIG.metrics_port)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.stop()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def run_changed(event: dict[str, Any], name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo.reconciler.run_deleted(namespace, name)
    else:
        memo.reconciler.run_changed(event["object"])


@kopf.on.event("batch", "v1", "jobs", labels=STAGE_JOBS)
def job_changed(labels: kopf.Labels, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.job_changed(namespace, labels[LABEL_RUN])
