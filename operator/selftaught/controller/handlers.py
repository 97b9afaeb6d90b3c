"""Kopf handlers: thin triggers. Every event on a run or on one of its Jobs, and a periodic
resync, call the same level-triggered reconcile; there is no edge-triggered state to lose.

The resync is the reconciler's own thread, not a `@kopf.timer`: Kopf puts a finalizer on every
object with a timer, and a run could then not be deleted while the operator is down."""

from __future__ import annotations

from typing import Any

import kopf

from selftaught.api.spec import API_GROUP, API_VERSION, PLURAL
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.jobs import LABEL_RUN, MANAGED_BY
from selftaught.controller.reconciler import Reconciler

CONFIG = OperatorConfig.from_env()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """One reconciler (and its caches) per operator process."""
    settings.execution.max_workers = CONFIG.workers
    settings.scanning.disabled = True  # no CRD or namespace watching: least-privilege RBAC
    settings.posting.level = 30  # Kopf's own events: warnings and errors only; ours are richer
    memo.reconciler = Reconciler(CONFIG)
    memo.reconciler.start_resync(CONFIG.resync_seconds)
    metrics.serve(CONFIG.metrics_port)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.reconciler.stop()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def run_changed(event: dict[str, Any], name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        memo.reconciler.forget(namespace, name)
        return
    memo.reconciler.observe_run(event["object"])
    memo.reconciler.reconcile(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def job_changed(event: dict[str, Any], labels: dict[str, str], namespace: str, memo: kopf.Memo, **_: Any) -> None:
    run = labels.get(LABEL_RUN)
    if run:
        memo.reconciler.observe_job(event["object"], deleted=event.get("type") == "DELETED")
        memo.reconciler.reconcile(namespace, run)
