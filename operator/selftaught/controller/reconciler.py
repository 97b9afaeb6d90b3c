"""One reconcile of one run: observe (the run, its Jobs, its store), decide (pure), act (create
Jobs, write status, post events). Level-triggered: every event on the run or its Jobs and a
periodic resync call the same function, which re-derives everything from what exists.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from selftaught.api.changes import merge_safe, unsafe_changes
from selftaught.api.load import SpecError, parse_run
from selftaught.api.spec import API_GROUP, API_VERSION, KIND, PLURAL, SelfTaughtRun, SelfTaughtRunSpec
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.decide import JobView, decide, job_view, parse_termination_message
from selftaught.controller.jobs import LABEL_RUN, build_job, build_service, needs_service, owner_reference
from selftaught.controller.planner import plan
from selftaught.controller.progress import scan
from selftaught.controller.status import Observation, build_status
from selftaught.stages.context import run_store
from selftaught.store import StoreError
from selftaught.store.layout import RUN_SNAPSHOT
from selftaught.store.manifest import Manifest

log = logging.getLogger(__name__)
TERMINAL = ("Succeeded", "Failed")


@dataclass
class _RunState:
    busy: bool = False  # a reconcile of this run is under way
    dirty: bool = False  # something happened meanwhile: go round once more
    fresh: bool = False  # the next pass reads the run and its Jobs from the API, not the cache


def _newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether `body` is a later version than `than` (resourceVersions are etcd revisions:
    numbers in practice, opaque strings by contract; when not numbers, the later arrival wins)."""
    if than is None:
        return True
    new, old = body["metadata"].get("resourceVersion", ""), than["metadata"].get("resourceVersion", "")
    if new.isdigit() and old.isdigit():
        return int(new) >= int(old)
    return True


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{error.status} {error.reason}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, config: OperatorConfig, api: client.ApiClient | None = None, clock: Callable[[], float] = time.time):
        self.config, self.clock = config, clock
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self._states: dict[tuple[str, str], _RunState] = {}
        self._locks_guard = threading.Lock()
        self._events: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._post_events, name="selftaught-events", daemon=True).start()
        self._manifests: dict[str, dict[str, Manifest]] = {}  # per store: immutable once written
        self._failures: dict[str, dict[str, Any]] = {}  # failed Job uid → termination message
        self._seen_done: dict[tuple[str, str], set[str]] = {}  # stages already announced
        self._seen_failed: set[str] = set()
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        self._phases: dict[tuple[str, str], str] = {}
        self._known: set[tuple[str, str]] = set()
        # the latest bodies Kopf delivered (or our own writes returned): most reconciles need no
        # GET or LIST at all; the periodic resync reads everything fresh to heal any drift
        self._runs: dict[tuple[str, str], dict[str, Any]] = {}
        self._job_bodies: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._stopping = threading.Event()

    def start_resync(self, interval: float) -> None:
        """Re-reconcile every known run every `interval` seconds: the safety net for missed
        events and for backoffs that expire while nothing else happens."""

        def loop() -> None:
            while not self._stopping.wait(interval):
                for namespace, name in sorted(self._known):
                    try:
                        self.reconcile(namespace, name, fresh=True)
                    except Exception:  # one broken run must not stop the others' resync
                        log.exception("resync of %s/%s failed", namespace, name)

        threading.Thread(target=loop, name="selftaught-resync", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._events.put(None)
        for timer in list(self._timers.values()):
            timer.cancel()

    # -- entry points ------------------------------------------------------------------------

    def observe_run(self, body: dict[str, Any]) -> None:
        """A run as a watch event delivered it."""
        meta = body["metadata"]
        self._remember_run((meta["namespace"], meta["name"]), body)

    def observe_job(self, body: dict[str, Any], deleted: bool = False) -> None:
        """A stage Job as a watch event delivered it."""
        meta = body["metadata"]
        run = meta.get("labels", {}).get(LABEL_RUN)
        with self._locks_guard:
            jobs = self._job_bodies.get((meta["namespace"], run))
            if jobs is None:
                return  # that run's Jobs were never listed: its next reconcile lists them
            if deleted:
                jobs.pop(meta["name"], None)
            elif _newer(body, jobs.get(meta["name"])):
                jobs[meta["name"]] = body

    def _remember_run(self, key: tuple[str, str], body: dict[str, Any]) -> None:
        with self._locks_guard:
            if _newer(body, self._runs.get(key)):
                self._runs[key] = body

    def reconcile(self, namespace: str, name: str, *, fresh: bool = False) -> None:
        """Reconcile one run now, or, if that run is being reconciled already, make sure the
        running reconcile goes round once more: a burst of events costs at most two passes."""
        key = (namespace, name)
        with self._locks_guard:
            state = self._states.setdefault(key, _RunState())
            state.fresh = state.fresh or fresh
            if state.busy:
                state.dirty = True
                return
            state.busy = True
        try:
            while True:
                with self._locks_guard:
                    state.dirty, fresh, state.fresh = False, state.fresh, False
                self._reconcile_once(namespace, name, fresh)
                with self._locks_guard:
                    if not state.dirty:
                        state.busy = False
                        return
        except BaseException:
            with self._locks_guard:
                state.busy = False
            raise

    def _reconcile_once(self, namespace: str, name: str, fresh: bool) -> None:
        key = (namespace, name)
        started = time.perf_counter()
        obj = None if fresh else self._runs.get(key)
        if obj is None:
            try:
                response = self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, _preload_content=False)
            except ApiException as error:
                if error.status == 404:
                    self.forget(namespace, name)
                    return
                raise
            obj = json.loads(response.data)
            with self._locks_guard:
                self._runs[key] = obj
        if fresh:
            with self._locks_guard:
                self._job_bodies.pop(key, None)
        if obj["metadata"].get("deletionTimestamp"):
            return
        self._known.add(key)
        requeue = self._reconcile(obj)
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if requeue is not None:
            self._schedule(namespace, name, requeue)

    def forget(self, namespace: str, name: str) -> None:
        """The run was deleted: its Jobs go with it (owner references); its data stays."""
        key = (namespace, name)
        self._known.discard(key)
        self._states.pop(key, None)
        self._runs.pop(key, None)
        self._job_bodies.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        self._seen_done.pop(key, None)
        self._phases.pop(key, None)
        self._update_phase_gauge()
        for labels in list(metrics.KEPT._metrics):  # prometheus_client has no removal by label prefix
            if labels[:2] == key:
                metrics.KEPT.remove(*labels)
                metrics.ACCURACY.remove(*labels)

    def _schedule(self, namespace: str, name: str, delay: float) -> None:
        key = (namespace, name)
        if key in self._timers and self._timers[key].is_alive():
            return
        timer = threading.Timer(max(delay, 0.5), self._fire, args=(namespace, name))
        timer.daemon = True
        self._timers[key] = timer
        timer.start()

    def _fire(self, namespace: str, name: str) -> None:
        self._timers.pop((namespace, name), None)
        try:
            self.reconcile(namespace, name)
        except Exception:  # a timer thread must not die silently
            log.exception("requeued reconcile of %s/%s failed", namespace, name)

    # -- one reconcile -----------------------------------------------------------------------

    def _reconcile(self, obj: dict[str, Any]) -> float | None:
        meta = obj["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 1)
        previous = obj.get("status") or {}
        if previous.get("observedGeneration") == generation and previous.get("phase") in TERMINAL:
            self._record_phase(namespace, name, previous["phase"])
            return None  # finished; a (safe) edit bumps the generation and looks again
        seen = Observation(generation=generation, now=_now(), previous=previous)
        try:
            run = parse_run(
                {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": name, "namespace": namespace}, "spec": obj.get("spec")},
                source=f"{KIND} {namespace}/{name}",
            )
        except SpecError as error:
            seen.invalid = str(error)
            self._write_status(obj, build_status(seen))
            return None
        run = self._with_defaults(run)
        seen.suspended = run.spec.suspend
        requeue: float | None = None
        try:
            jobs = self._jobs(namespace, name)  # before the store: a Job seen Complete has its manifest there
            store = run_store(run)
            seen.store = store.uri
            effective, seen.refused = self._accept(store, run)
            progress = scan(store, self._manifests.setdefault(store.uri, {}))
        except StoreError as error:
            return self._store_unavailable(obj, seen, str(error))
        seen.shards = effective.generation.shards
        seen.plan = plan(effective, progress.done)
        seen.progress = progress
        seen.decision = decide(effective, seen.plan, jobs, previous.get("retries") or {}, self.clock(), suspended=run.spec.suspend)
        accepted_run = run.model_copy(update={"spec": effective})
        requeue = seen.decision.requeue_after
        for ref, attempt in seen.decision.create:
            try:
                self._create(obj, accepted_run, ref, attempt)
            except ApiException as error:  # e.g. a quota or an admission webhook said no
                detail = _api_message(error)
                self._post(obj, "Warning", "JobCreateFailed", f"{ref.label}: {detail}")
                seen.unavailable = f"cannot create the {ref.label} Job: {detail}"
                requeue = 10.0
        status = build_status(seen)
        self._announce(obj, seen, jobs, status)
        self._write_status(obj, status)
        return requeue

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

    def _accept(self, store, run: SelfTaughtRun) -> tuple[SelfTaughtRunSpec, list[str]]:
        """The spec this run executes: the one it started with, plus any safe edits."""
        if not store.exists(RUN_SNAPSHOT):
            store.write_text(RUN_SNAPSHOT, run.model_dump_json(by_alias=True, exclude={"status"}, exclude_none=True))
            return run.spec, []
        accepted = SelfTaughtRunSpec.model_validate(json.loads(store.read_text(RUN_SNAPSHOT))["spec"])
        refused = unsafe_changes(accepted, run.spec)
        effective = merge_safe(accepted, run.spec) if refused else run.spec
        if effective != accepted:
            snapshot = run.model_copy(update={"spec": effective})
            store.write_text(RUN_SNAPSHOT, snapshot.model_dump_json(by_alias=True, exclude={"status"}, exclude_none=True))
        return effective, refused

    def _store_unavailable(self, obj: dict[str, Any], seen: Observation, message: str) -> float | None:
        since = seen.previous.get("storeUnreachableSince") or seen.now
        elapsed = self.clock() - datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        if elapsed >= self.config.storage_grace_seconds:
            seen.failure = ("StorageUnavailable", f"the store was unreachable for {int(elapsed)}s: {message}")
            status = build_status(seen)
            self._post(obj, "Warning", "StorageUnavailable", seen.failure[1])
            self._write_status(obj, status)
            return None
        seen.unavailable = f"store unreachable: {message}"
        status = build_status(seen)
        status["storeUnreachableSince"] = since
        self._write_status(obj, status)
        return 15.0

    # -- Kubernetes I/O ----------------------------------------------------------------------

    def _jobs(self, namespace: str, name: str) -> list[JobView]:
        key = (namespace, name)
        with self._locks_guard:
            cached = self._job_bodies.get(key)
            bodies = list(cached.values()) if cached is not None else None
        if bodies is None:
            listed = self.batch.list_namespaced_job(namespace, label_selector=f"{LABEL_RUN}={name}", _preload_content=False)
            bodies = json.loads(listed.data)["items"]
            with self._locks_guard:
                self._job_bodies[key] = {job["metadata"]["name"]: job for job in bodies}
        return [job_view(job, self._failure_of(job)) for job in bodies]

    def _failure_of(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The failed pod's termination message: the stage's own reason and message."""
        failed = any(c.get("type") == "Failed" and c.get("status") == "True" for c in (job.get("status") or {}).get("conditions", []))
        if not failed:
            return None
        uid = job["metadata"]["uid"]
        if uid not in self._failures:
            meta = job["metadata"]
            listed = self.core.list_namespaced_pod(
                meta["namespace"], label_selector=f"batch.kubernetes.io/job-name={meta['name']}", _preload_content=False
            )
            pods = sorted(json.loads(listed.data)["items"], key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
            message = None
            for pod in pods:
                for container in (pod.get("status") or {}).get("containerStatuses") or []:
                    terminated = (container.get("state") or {}).get("terminated")
                    if terminated and terminated.get("exitCode"):
                        message = terminated.get("message") or f"exit code {terminated['exitCode']} ({terminated.get('reason')})"
                        break
                if message:
                    break
            self._failures[uid] = parse_termination_message(message)
        return self._failures[uid]

    def _create(self, obj: dict[str, Any], run: SelfTaughtRun, ref, attempt: int) -> None:
        owner = owner_reference(obj)
        namespace = run.metadata.namespace
        if needs_service(run, ref):
            self._create_ignoring_conflict(lambda: self.core.create_namespaced_service(namespace, build_service(run, owner, ref, attempt)))
        job = build_job(run, owner, ref, attempt, self.config)
        created = self._create_ignoring_conflict(lambda: self.batch.create_namespaced_job(namespace, job, _preload_content=False))
        if created is None:  # it exists, so our cache missed it: list this run's Jobs next time
            with self._locks_guard:
                self._job_bodies.pop((namespace, run.metadata.name), None)
        else:
            self.observe_job(json.loads(created.data))
            metrics.JOBS_CREATED.labels(ref.name).inc()
            if attempt:
                metrics.RETRIES.labels(ref.name).inc()
                self._post(obj, "Warning", "StageRetrying", f"{ref.label}: attempt {attempt + 1}, Job {job['metadata']['name']}")
            else:
                self._post(obj, "Normal", "StageStarted", f"{ref.label}: Job {job['metadata']['name']}")

    @staticmethod
    def _create_ignoring_conflict(create: Callable[[], Any]) -> Any:
        try:
            return create()
        except ApiException as error:
            if error.status == 409:  # deterministic names: someone (an earlier us) made it already
                return None
            raise

    def _write_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        previous = obj.get("status") or {}
        meta = obj["metadata"]
        self._record_phase(meta["namespace"], meta["name"], status.get("phase"))
        if previous == status:
            return
        patch = {"status": {**{k: None for k in previous if k not in status}, **status}}
        response = self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, meta["namespace"], PLURAL, meta["name"], patch, _preload_content=False
        )
        self._remember_run((meta["namespace"], meta["name"]), json.loads(response.data))
        if previous.get("phase") != status.get("phase"):
            kind = "Warning" if status.get("phase") == "Failed" else "Normal"
            self._post(obj, kind, f"Run{status.get('phase')}", status.get("message", ""))

    def _announce(self, obj: dict[str, Any], seen: Observation, jobs: list[JobView], status: dict[str, Any]) -> None:
        """Events and metrics for what changed since this operator process last looked."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        assert seen.progress is not None
        done = {ref.label: (ref, manifest) for ref, manifest in seen.progress.manifests.items()}
        first_look = key not in self._seen_done
        announced = self._seen_done.setdefault(key, set(done) if first_look else set())
        for label in sorted(set(done) - announced):
            ref, manifest = done[label]
            metrics.STAGE_SECONDS.labels(ref.name).observe(manifest.seconds)
            summary = ", ".join(f"{k} {v}" for k, v in manifest.summary.items() if k != "scoreboard")
            self._post(obj, "Normal", "StageSucceeded", f"{label}: {summary}")
            announced.add(label)
        for view in jobs:
            if view.state == "failed" and view.uid not in self._seen_failed:
                self._seen_failed.add(view.uid)
                if not first_look:
                    metrics.JOB_FAILURES.labels(view.stage.split("-")[0], view.reason).inc()
                    self._post(obj, "Warning", "StageFailed", f"{view.stage} (Job {view.name}): {view.reason}: {view.message}")
        for row in status.get("iterations", []):
            labels = (meta["namespace"], meta["name"], str(row["iteration"]))
            if row.get("kept") is not None:
                metrics.KEPT.labels(*labels).set(row["kept"])
            if row.get("accuracy") is not None:
                metrics.ACCURACY.labels(*labels).set(row["accuracy"])

    def _post(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = datetime.now(timezone.utc).isoformat()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": "selftaught-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._events.put((meta["namespace"], body))

    def _post_events(self) -> None:
        """Events are best effort and must not delay the next Job: a thread posts them."""
        while (item := self._events.get()) is not None:
            namespace, body = item
            try:
                self.core.create_namespaced_event(namespace, body)
            except Exception as error:  # the status has the truth; an event is a courtesy
                log.warning("could not post event %s in %s: %s", body["reason"], namespace, error)

    def _record_phase(self, namespace: str, name: str, phase: str | None) -> None:
        if phase:
            self._phases[(namespace, name)] = phase
            self._update_phase_gauge()

    def _update_phase_gauge(self) -> None:
        counts: dict[str, int] = {p: 0 for p in ("Pending", "Running", "Suspended", "Succeeded", "Failed")}
        for phase in list(self._phases.values()):
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            metrics.RUNS.labels(phase).set(count)
