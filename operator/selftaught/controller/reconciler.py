"""One reconcile of one run: observe (the run, its Jobs, its store), decide (pure), act (create
Jobs, write status, post events). Level-triggered: every event on the run or its Jobs, a
requeue after a backoff, and a periodic fresh re-read all call the same pass, which re-derives
everything from what exists; the work queue makes it one pass at a time per run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from selftaught.api.load import SpecError, parse_run
from selftaught.api.spec import API_GROUP, API_VERSION, KIND, SelfTaughtRun
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.decide import decide, job_view
from selftaught.controller.jobs import build_job, build_service, job_name, needs_service
from selftaught.controller.kube import Kube, api_message
from selftaught.controller.report import Reporter
from selftaught.controller.status import Observation, build_status, status_document
from selftaught.controller.workqueue import WorkQueue
from selftaught.pipeline.planner import plan
from selftaught.pipeline.progress import scan
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store import StoreError
from selftaught.store.manifest import Manifest

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")
RunKey = tuple[str, str]
#: (namespace, run name) -> that run's stage Jobs, as the watch last saw them
JobSource = Callable[[str, str], list[dict[str, Any]]]


def _newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether `body` is a later version than `than` (resourceVersions are etcd revisions:
    numbers in practice, opaque strings by contract; when not numbers, the later arrival wins)."""
    if than is None:
        return True
    new, old = body["metadata"].get("resourceVersion", ""), than["metadata"].get("resourceVersion", "")
    return int(new) >= int(old) if new.isdigit() and old.isdigit() else True


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube | None = None, jobs: JobSource | None = None, clock: Callable[[], float] = time.time):
        self.config, self.clock = config, clock
        self.kube = kube or Kube()
        self.jobs = jobs or self.kube.list_jobs
        self.report = Reporter(self.kube)
        self.queue: WorkQueue[RunKey] = WorkQueue(self._pass, min_delay=0.5)
        self._lock = threading.Lock()
        # the latest run bodies Kopf delivered or our own writes returned: most passes need no GET
        self._runs: dict[RunKey, dict[str, Any]] = {}
        self._manifests: dict[str, dict[str, Manifest]] = {}  # per store; immutable once written

    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()
        self.kube.stop()

    # -- entry points (the Kopf handlers) ----------------------------------------------------------

    def run_changed(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self._remember(key, body)
        self.queue.submit(key)

    def run_deleted(self, namespace: str, name: str) -> None:
        """The run was deleted: its Jobs go with it (owner references); its data stays."""
        key = (namespace, name)
        self.queue.forget(key)
        with self._lock:
            self._runs.pop(key, None)
        self.report.forget(namespace, name)

    def job_changed(self, namespace: str, run: str) -> None:
        self.queue.submit((namespace, run))

    def reconcile(self, namespace: str, name: str, *, fresh: bool = False) -> None:
        """One pass now (or one more after the pass under way)."""
        self.queue.submit((namespace, name), fresh=fresh)

    # -- one pass ----------------------------------------------------------------------------------

    def _remember(self, key: RunKey, body: dict[str, Any]) -> None:
        with self._lock:
            if _newer(body, self._runs.get(key)):
                self._runs[key] = body

    def _pass(self, key: RunKey, fresh: bool) -> float | None:
        started = time.perf_counter()
        with self._lock:
            obj = None if fresh else self._runs.get(key)
        if obj is None:
            obj = self.kube.get_run(*key)
            if obj is None:
                self.run_deleted(*key)
                return None
            self._remember(key, obj)
        if obj["metadata"].get("deletionTimestamp"):
            return None
        # the safety net for missed events: read everything fresh when nothing happened for a while
        self.queue.later(key, self.config.resync_seconds, fresh=True)
        requeue = self._reconcile(obj)
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        return requeue

    def _reconcile(self, obj: dict[str, Any]) -> float | None:
        meta = obj["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 1)
        previous = obj.get("status") or {}
        if previous.get("observedGeneration") == generation and previous.get("phase") in TERMINAL:
            self.report.phase(namespace, name, previous["phase"])
            return None  # finished; a (safe) edit bumps the generation and looks again
        seen = Observation(generation=generation, now=_now(), previous=previous)
        # observe
        try:
            run = self._with_defaults(parse_run(_run_document(obj), source=f"{KIND} {namespace}/{name}"))
        except SpecError as error:
            seen.invalid = str(error)
            self._write_status(obj, seen)
            return None
        seen.suspended = run.spec.suspend
        try:
            # Jobs before the store: a Job seen Complete has its manifest there already
            jobs = [job_view(job, self.kube.failure_of(job)) for job in self.jobs(namespace, name)]
            store = open_run_store(run)
            seen.store = store.uri
            acceptance = accept(store, run)
            progress = scan(store, self._manifests.setdefault(store.uri, {}))
        except StoreError as error:
            return self._store_unavailable(obj, seen, str(error))
        # decide
        spec = acceptance.spec
        seen.refused, seen.shards, seen.progress = acceptance.refused, spec.generation.shards, progress
        seen.plan = plan(spec, progress.done)
        seen.decision = decide(spec, seen.plan, jobs, previous.get("retries") or {}, self.clock(), suspended=run.spec.suspend)
        # act
        requeue = seen.decision.requeue_after
        accepted = run.model_copy(update={"spec": spec})
        for ref, attempt in seen.decision.create:
            try:
                self._create(obj, accepted, ref, attempt)
            except ApiException as error:  # e.g. a quota or an admission webhook said no
                detail = api_message(error)
                self.report.event(obj, "Warning", "JobCreateFailed", f"{ref.label}: {detail}")
                seen.unavailable = f"cannot create the {ref.label} Job: {detail}"
                requeue = 10.0
        status = self._write_status(obj, seen, jobs_seen=jobs)
        return requeue if status.phase not in TERMINAL else None

    def _with_defaults(self, run: SelfTaughtRun) -> SelfTaughtRun:
        """The platform's default S3 endpoint and credentials Secret, where the run names none."""
        storage = run.spec.storage
        update = {}
        if not storage.endpoint and self.config.default_s3_endpoint:
            update["endpoint"] = self.config.default_s3_endpoint
        if not storage.credentials_secret and self.config.default_credentials_secret:
            update["credentials_secret"] = self.config.default_credentials_secret
        if not update:
            return run
        spec = run.spec.model_copy(update={"storage": storage.model_copy(update=update)})
        return run.model_copy(update={"spec": spec})

    def _store_unavailable(self, obj: dict[str, Any], seen: Observation, message: str) -> float | None:
        since = seen.previous.get("storeUnreachableSince") or seen.now
        elapsed = self.clock() - datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        if elapsed >= self.config.storage_grace_seconds:
            seen.failure = ("StorageUnavailable", f"the store was unreachable for {int(elapsed)}s: {message}")
            self.report.event(obj, "Warning", "StorageUnavailable", seen.failure[1])
            self._write_status(obj, seen)
            return None
        seen.unavailable, seen.unreachable_since = f"store unreachable: {message}", since
        self._write_status(obj, seen)
        return 15.0

    def _create(self, obj: dict[str, Any], run: SelfTaughtRun, ref: StageRef, attempt: int) -> None:
        if needs_service(run, ref):
            service = build_service(run, ref, attempt)
            kopf.append_owner_reference(service, owner=_owner(obj))
            self.kube.create_service(service)
        job = build_job(run, ref, attempt, self.config)
        kopf.append_owner_reference(job, owner=_owner(obj))
        if self.kube.create_job(job) is not None:
            self.report.job_created(obj, ref.name, ref.label, attempt, job_name(run.metadata.name, ref, attempt))

    def _write_status(self, obj: dict[str, Any], seen: Observation, jobs_seen: list | None = None) -> Any:
        status = build_status(seen)
        document = status_document(status)
        meta = obj["metadata"]
        if jobs_seen is not None:
            self.report.changes(obj, seen, jobs_seen, document.get("iterations", []))
        self.report.phase(meta["namespace"], meta["name"], status.phase)
        previous = obj.get("status") or {}
        if previous == document:
            return status
        patch = {**{k: None for k in previous if k not in document}, **document}
        self._remember((meta["namespace"], meta["name"]), self.kube.patch_status(meta["namespace"], meta["name"], patch))
        if previous.get("phase") != status.phase:
            kind = "Warning" if status.phase == "Failed" else "Normal"
            self.report.event(obj, kind, f"Run{status.phase}", status.message or "")
        return status


def _run_document(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": obj.get("spec"),
    }


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    """What `kopf.append_owner_reference` reads of the owner (a body read raw may lack
    apiVersion/kind on some paths)."""
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": obj["metadata"]}
