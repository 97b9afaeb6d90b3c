"""One reconcile of one run: observe (the run, its Jobs, its store), decide (pure), act (create
Jobs, write status, post events). Level-triggered: every event on the run or its Jobs, a
requeue after a backoff, and a periodic fresh re-read all call the same pass, which re-derives
everything from what exists; the work queue makes it one pass at a time per run.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from selftaught import __version__
from selftaught.api.load import parse_api_object
from selftaught.api.spec import API_GROUP, API_VERSION, KIND, SelfTaughtRun
from selftaught.api.status import Phase, ServingStatus
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.decide import UNWATCHED_PODS_SECONDS, FailedAttempt, JobView, decide, job_view
from selftaught.controller.jobs import build_job, build_service, job_name, needs_service, pod_overrides
from selftaught.controller.kube import InvalidObject, Kube, api_message
from selftaught.controller.report import Reporter
from selftaught.controller.serving import build_service as build_serving_service
from selftaught.controller.serving import decide_serving, endpoint, recorded_choice, serve_labels, serve_name
from selftaught.controller.status import Observation, build_status, status_document, status_patch
from selftaught.controller.workqueue import WorkQueue
from selftaught.errors import Failure, InvalidSpec, Reason, ReasonClass, StorageUnavailable, as_reason, failure_of, reason_class
from selftaught.pipeline.estimate import estimate, inputs_for, measure
from selftaught.pipeline.live import read_view
from selftaught.pipeline.planner import plan
from selftaught.pipeline.progress import Progress, iteration_summaries, scan
from selftaught.pipeline.runstore import SnapshotUnreadable, accept, open_run_store
from selftaught.pipeline.serving import ALL_ITERATIONS, Choice, NothingToServe, choose
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import REPORT
from selftaught.store.manifest import Manifest

log = logging.getLogger(__name__)
RunKey = tuple[str, str]
FAILED = "the run failed: nothing new is served until it succeeds"
#: how often a server that is not ready yet has its pods looked at (they are not watched), at
#: most: a shorter resync (`SELFTAUGHT_RESYNC_SECONDS`) looks sooner
SERVER_LOOK_SECONDS = 15.0

#: (namespace, run name) -> that run's stage Jobs (or its judge's server Deployment), as the watch last saw them
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
    def __init__(
        self,
        config: OperatorConfig,
        kube: Kube | None = None,
        jobs: JobSource | None = None,
        clock: Callable[[], float] = time.time,
        servers: JobSource | None = None,
    ):
        self.config, self.clock = config, clock
        self.kube = kube or Kube()
        self.jobs = jobs or self.kube.list_jobs
        self.servers: JobSource = servers or (lambda namespace, run: [])
        self.report = Reporter(self.kube)
        self.queue: WorkQueue[RunKey] = WorkQueue(self._pass, min_delay=0.5)
        self._lock = threading.Lock()
        # the latest run bodies Kopf delivered or our own writes returned: most passes need no GET
        self._runs: dict[RunKey, dict[str, Any]] = {}
        self._manifests: dict[str, dict[str, Manifest]] = {}  # per store; immutable once written
        self._stores: dict[RunKey, str] = {}  # so a deleted run's manifest cache goes with it
        self._written: dict[RunKey, str] = {}  # the resourceVersion of our latest status write
        self._created: dict[tuple[str, str], str] = {}  # (namespace, Job) -> its resourceVersion as we created it

    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()
        self.kube.stop()

    # -- entry points (the Kopf handlers) ----------------------------------------------------------

    def run_changed(self, body: dict[str, Any]) -> None:
        """A pass for every change but the echo of our own status write: the pass that wrote it
        saw everything it says, and anything that happened since comes as its own event."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            echo = meta.get("resourceVersion") is not None and self._written.get(key) == meta["resourceVersion"]
        self._remember(key, body)
        if not echo:
            self.queue.submit(key)

    def run_deleted(self, namespace: str, name: str) -> None:
        """The run was deleted: its Jobs go with it (owner references); its data stays."""
        key = (namespace, name)
        self.queue.forget(key)
        with self._lock:
            self._runs.pop(key, None)
            self._written.pop(key, None)
            uri = self._stores.pop(key, None)
            if uri is not None and uri not in self._stores.values():
                self._manifests.pop(uri, None)
        self.report.forget(namespace, name)

    def job_changed(self, namespace: str, run: str, job: dict[str, Any] | None = None, kind: str | None = None) -> None:
        """A pass for every change of a run's Job but the echo of our own create (the pass that
        created it counted it as running, and asked to look at its pods again)."""
        if job is not None:
            meta = job.get("metadata") or {}
            with self._lock:
                ours = self._created.pop((namespace, meta.get("name", "")), None)
            if kind == "ADDED" and ours is not None and ours == meta.get("resourceVersion"):
                return
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
        try:
            requeue = self._reconcile(obj)
        except ApiException as error:
            if error.status != 409:
                raise
            # our status write lost a race with another write: read the run again, soon
            with self._lock:
                self._runs.pop(key, None)
            return 1.0
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if not _finished(self._runs.get(key) or obj):
            # the safety net for missed events: read the run fresh when nothing happened for a
            # while. A finished run needs none: an edit (a new generation) is an event.
            self.queue.resync(key, self.config.resync_seconds)
        return requeue

    def _reconcile(self, obj: dict[str, Any]) -> float | None:
        meta = obj["metadata"]
        namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 1)
        previous = obj.get("status") or {}
        if _finished(obj):
            self.report.phase(namespace, name, previous["phase"])
            if ((obj.get("spec") or {}).get("serve") or {}).get("enabled") or previous.get("serving"):
                return self._serve_finished(obj)  # the server's events: its readiness, a deleted Deployment
            return None  # finished; a (safe) edit bumps the generation and looks again
        seen = Observation(generation=generation, now=_now(), previous=previous)
        # observe
        try:
            run, ignored = parse_api_object(_run_document(obj), source=f"{KIND} {namespace}/{name}")
        except InvalidSpec as error:
            seen.invalid = failure_of(error)
            self._write_status(obj, seen)
            return None
        if ignored and set(ignored) != set(previous.get("ignoredFields") or []):
            self.report.event(obj, "Warning", "UnknownFields", f"ignored, unknown to operator {__version__}: {', '.join(ignored)}")
        seen.ignored = ignored
        run = self._with_defaults(run)
        seen.suspended = run.spec.suspend
        try:
            # Jobs before the store: a Job seen Complete has its manifest there already. Jobs are
            # matched by owner too: a re-created run may briefly see its namesake's Jobs.
            jobs = [
                job_view(job, self.kube.failure_of(job), self.kube.waiting_of(job))
                for job in self.jobs(namespace, name)
                if _owned_by(job, meta.get("uid"))
            ]
            store = open_run_store(run)
            seen.store = self._stores[(namespace, name)] = store.uri
            progress = scan(store, self._manifests.setdefault(store.uri, {}))
            acceptance = accept(store, run, progress, busy=_running(jobs))
        except SnapshotUnreadable as error:
            seen.invalid = failure_of(error)
            self._write_status(obj, seen)
            return None
        except StorageUnavailable as error:
            return self._store_unavailable(obj, seen, str(error))
        if acceptance.earlier_uid:
            seen.invalid = Failure.of(
                Reason.RUN_NAME_IN_USE,
                f"{store.uri} holds the data of an earlier run named {name} (uid {acceptance.earlier_uid}) whose spec differs "
                f"in {', '.join(acceptance.refused)}; this run would continue from that data. To start over, delete "
                f"{store.uri}/ or use a new metadata.name; to continue the earlier run, apply its spec",
            )
            if previous.get("phase") != Phase.FAILED:
                self.report.event(obj, "Warning", Reason.RUN_NAME_IN_USE, seen.invalid.message)
            self._write_status(obj, seen)
            return None
        # decide
        spec = acceptance.spec
        seen.refused, seen.shards, seen.progress = acceptance.refused, spec.generation.shards, progress
        seen.plan = plan(spec, progress.done)
        history = _history(previous)
        seen.decision = decide(
            spec, seen.plan, jobs, history.attempts, history.failures, self.clock(),
            created_at=history.created_at, disruptions=history.disruptions,
            suspended=run.spec.suspend, generation=generation, startup_timeout=lambda ref: startup_timeout(run, ref),
        )  # fmt: skip
        # the cost, corrected by the finished stages; how far the running ones are (a small read
        # per shard that has written progress: never per item)
        seen.estimate = estimate(spec, inputs_for(spec), measure(progress.manifests))
        seen.live = [view for ref, _ in seen.decision.running if (view := read_view(store, ref, progress, spec.generation.shards)) is not None]
        # the stage process that finishes the run writes it there (a moment after its manifest,
        # which may be the last thing this operator reads of a finished run)
        seen.report = store.url(REPORT) if progress.report or seen.plan.finished else None
        # act
        decision = seen.decision
        requeue = decision.requeue_after
        for ref, view in decision.expire:
            self.kube.delete_job(namespace, view.name)
            self.report.event(obj, "Warning", Reason.STAGE_START_TIMEOUT, f"{ref.label} (Job {view.name}): {decision.failures[ref.label].failure}")
        for ref, attempt in decision.vanished:
            self.report.event(obj, "Warning", Reason.JOB_DELETED, f"{ref.label}: the Job of attempt {attempt} was deleted before it finished; counted as a failed attempt")
        accepted = run.model_copy(update={"spec": spec})
        for ref, attempt in decision.create:
            try:
                created = self._create(obj, accepted, ref, attempt)
            except InvalidObject as error:  # the server will refuse this Job every time: say so, once
                decision.failures[ref.label] = FailedAttempt(attempt, Failure.of(Reason.INVALID_JOB, str(error)), self.clock(), generation)
                decision.failure = Failure.of(Reason.INVALID_JOB, f"{ref.label}: the API server refused the Job: {error}")
            except ApiException as error:  # e.g. the API server is overloaded: not an attempt
                detail = api_message(error)
                decision.attempts[ref.label] = attempt
                self.report.event(obj, "Warning", "JobCreateFailed", f"{ref.label}: {detail}")
                seen.unavailable = f"cannot create the {ref.label} Job: {detail}"
                requeue = 10.0
            else:
                if created is not None:  # the status says it runs now, not one status write later
                    decision.running.append((ref, job_view(created, None, self.kube.waiting_of(created))))
                    requeue = min(requeue or UNWATCHED_PODS_SECONDS, UNWATCHED_PODS_SECONDS)  # its pods, as decide asks
        seen.serving, retry = self._serve(obj, run, progress, succeeded=seen.plan.finished and not decision.failure, failed=bool(decision.failure))
        status = self._write_status(obj, seen, jobs_seen=jobs)
        if status.phase is not None and status.phase.finished:
            return retry
        return min((t for t in (requeue, retry) if t is not None), default=None)

    # -- the judge's server ------------------------------------------------------------------------

    def _serve(self, obj: dict[str, Any], run: SelfTaughtRun, progress: Progress, *, succeeded: bool, failed: bool = False) -> tuple[ServingStatus | None, float | None]:
        """Put the server in place, roll it out, or remove it; its status, and when to look again
        (a refused write). The choice is read from the store's numbers once the run succeeded."""
        previous = (obj.get("status") or {}).get("serving")
        if not run.spec.serve.enabled and not previous and not self._server_of(obj):
            return None, None
        choice, problem = None, FAILED if failed else None
        if succeeded and run.spec.serve.enabled:
            try:
                choice = choose(iteration_summaries(progress, limit=ALL_ITERATIONS), run.spec.models.seed, run.spec.serve.iteration)
            except NothingToServe as error:
                problem = str(error)
        return self._act_serving(obj, run, choice, problem)

    def _serve_finished(self, obj: dict[str, Any]) -> float | None:
        """A finished run's server, between edits: kept in place (a Deployment deleted by hand
        comes back), its readiness in `status.serving`. The choice is the one the status records
        (or, where none is, read from the store once)."""
        meta, status = obj["metadata"], obj.get("status") or {}
        try:
            run, _ = parse_api_object(_run_document(obj), source=f"{KIND} {meta['namespace']}/{meta['name']}")
        except InvalidSpec:
            return None
        run = self._with_defaults(run)
        if status.get("phase") != Phase.SUCCEEDED:
            serving, retry = self._act_serving(obj, run, None, FAILED)
        elif (choice := recorded_choice(run, status.get("serving"))) is not None or not run.spec.serve.enabled:
            serving, retry = self._act_serving(obj, run, choice, None)
        else:
            try:
                store = open_run_store(run)
                progress = scan(store, self._manifests.setdefault(store.uri, {}))
            except StorageUnavailable as error:
                serving, retry = ServingStatus(message=f"cannot read the run's store to choose a checkpoint: {error}"), 15.0
            else:
                serving, retry = self._serve(obj, run, progress, succeeded=True)
        document = serving.model_dump(mode="json", by_alias=True, exclude_none=True) if serving else None
        if document != status.get("serving"):
            written = self.kube.patch_status(meta["namespace"], meta["name"], status_patch({"serving": status.get("serving")}, {"serving": document}))
            key = (meta["namespace"], meta["name"])
            with self._lock:
                self._written[key] = written["metadata"].get("resourceVersion")
            self._remember(key, written)
        return retry

    def _server_of(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        return next((d for d in self.servers(meta["namespace"], meta["name"]) if _owned_by(d, meta.get("uid"))), None)

    def _act_serving(self, obj: dict[str, Any], run: SelfTaughtRun, choice: Choice | None, problem: str | None) -> tuple[ServingStatus | None, float | None]:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], serve_name(meta["name"])
        observed = self._server_of(obj)
        had_status = bool((obj.get("status") or {}).get("serving"))
        action = decide_serving(run, self.config, choice=choice, problem=problem, observed=observed, had_status=had_status)
        if action.delete:
            self.kube.delete_deployment(namespace, name)
            self.kube.delete_service(namespace, name)
            if observed is not None:
                self.report.event(obj, "Normal", "ServingStopped", f"removed the judge's server {name} (serve.enabled is false)")
        if action.apply is None:
            if observed is None or action.status is None or action.status.ready or action.status.iteration is None:
                return action.status, None
            # not ready: loading (minutes for a big checkpoint), or stuck; pods are not watched,
            # so look at them now and again until it is ready
            look = min(SERVER_LOOK_SECONDS, self.config.resync_seconds)
            waiting = self.kube.server_problem(namespace, serve_labels(meta["name"]))
            if waiting is None:
                return action.status, look
            self.report.server_waiting(obj, observed, waiting)
            message = f"the server cannot start: {waiting.reason}: {waiting.message}"
            return action.status.model_copy(update={"message": message}), look
        deployment = action.apply
        kopf.append_owner_reference(deployment, owner=_owner(obj))
        service = build_serving_service(run)
        kopf.append_owner_reference(service, owner=_owner(obj))
        try:
            if observed is None:
                self.kube.create_deployment(deployment)
            else:
                self.kube.replace_deployment(deployment, observed["metadata"].get("resourceVersion"))
            self.kube.create_service(service)
        except InvalidObject as error:  # refused every time until the spec changes: say so
            self.report.event(obj, "Warning", "ServingRefused", f"the API server refused the judge's server {name}: {error}")
            return ServingStatus(message=f"InvalidServer: the API server refused the Deployment or Service {name}: {error}"), None
        except ApiException as error:
            if error.status == 409:
                raise  # a stale read: the pass reads the run again and retries
            detail = api_message(error)
            self.report.event(obj, "Warning", "ServingFailed", f"cannot put the judge's server {name} in place: {detail}")
            return ServingStatus(message=f"retrying: cannot put the judge's server in place: {detail}"), 10.0
        served = action.status
        verb = "started" if observed is None else "rolling out"
        self.report.event(obj, "Normal", "ServingStarted" if observed is None else "ServingUpdated", f"{verb} the judge's server {name}: {served.message if served else ''}; endpoint {endpoint(run)}")
        return served, None

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
            seen.failure = Failure.of(Reason.STORAGE_UNAVAILABLE, f"the store was unreachable for {int(elapsed)}s: {message}")
            self.report.event(obj, "Warning", Reason.STORAGE_UNAVAILABLE, seen.failure.message)
            self._write_status(obj, seen)
            return None
        seen.unavailable, seen.unreachable_since = f"store unreachable: {message}", since
        self._write_status(obj, seen)
        return 15.0

    def _create(self, obj: dict[str, Any], run: SelfTaughtRun, ref: StageRef, attempt: int) -> dict[str, Any] | None:
        """The Job as created, or None when it existed (an earlier pass, or operator, made it)."""
        job = build_job(run, ref, attempt, self.config)
        kopf.append_owner_reference(job, owner=_owner(obj))
        created = self.kube.create_job(job)
        if created is None:
            return None  # and its Service
        with self._lock:
            self._created[(job["metadata"]["namespace"], job["metadata"]["name"])] = created["metadata"].get("resourceVersion", "")
        if needs_service(run, ref):  # owned by its Job: collected with it, retry after retry
            service = build_service(run, ref, attempt)
            kopf.append_owner_reference(service, owner=created)
            self.kube.create_service(service)
        self.report.job_created(obj, ref.name, ref.label, attempt, job_name(run.metadata.name, ref, attempt))
        return created

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
        patch = status_patch(previous, document)
        key = (meta["namespace"], meta["name"])
        written = self.kube.patch_status(*key, patch)
        with self._lock:
            self._written[key] = written["metadata"].get("resourceVersion")
        self._remember(key, written)
        if previous.get("phase") != status.phase:
            kind = "Warning" if status.phase == Phase.FAILED else "Normal"
            self.report.event(obj, kind, f"Run{status.phase}", status.message or "")
        return status


def _run_document(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], **({"uid": meta["uid"]} if meta.get("uid") else {})},
        "spec": obj.get("spec"),
    }


def _finished(obj: dict[str, Any]) -> bool:
    """Succeeded or Failed at the current generation. A verdict of the operator's own (a spec it
    could not read, a snapshot, the run's name: class `operator`) is not finished: a newer
    operator (or CRD), deleted data or an edit may heal it, so it is looked at again."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation", 1) or status.get("phase") not in (Phase.SUCCEEDED, Phase.FAILED):
        return False
    succeeded = next((c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {})
    return reason_class(succeeded.get("reason") or "") is not ReasonClass.OPERATOR


def _running(jobs: list[JobView]) -> set[StageRef]:
    """Stages with an active Job: it runs with the recorded spec, so an edit of a field that stage
    depends on is not accepted while it runs (it could publish what the old value produced)."""
    running = set()
    for view in jobs:
        if view.state == "active":
            with contextlib.suppress(ValueError):  # a Job labelled by someone else
                running.add(StageRef.parse(view.stage))
    return running


def _owned_by(job: dict[str, Any], uid: str | None) -> bool:
    owners = job["metadata"].get("ownerReferences")
    return uid is None or owners is None or any(owner.get("uid") == uid for owner in owners)


@dataclass
class _History:
    attempts: dict[str, int]
    created_at: dict[str, float]
    failures: dict[str, FailedAttempt]
    disruptions: dict[str, int]


def _history(status: dict[str, Any]) -> _History:
    """What the status remembers of each stage's attempts (it outlives the Jobs)."""
    history = _History({}, {}, {}, {})
    for label, stage in (status.get("attempts") or {}).items():
        history.attempts[label] = int(stage.get("attempts", 0))
        history.disruptions[label] = int(stage.get("disruptions", 0))
        if stage.get("createdAt"):
            history.created_at[label] = datetime.fromisoformat(stage["createdAt"].replace("Z", "+00:00")).timestamp()
        if last := stage.get("lastFailure"):
            failure = Failure(as_reason(str(last.get("reason", ""))), str(last.get("message", "")), bool(last.get("permanent")))
            at = datetime.fromisoformat(last["at"].replace("Z", "+00:00")).timestamp() if last.get("at") else 0.0
            history.failures[label] = FailedAttempt(int(last.get("attempt", 0)), failure, at, int(last.get("generation", 0)))
    return history


def startup_timeout(run: SelfTaughtRun, ref: StageRef) -> float | None:
    """`scheduling.<kind>.startupTimeoutSeconds` (or the stage's own)."""
    return getattr(pod_overrides(run, ref), "startup_timeout_seconds", None)


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    """What `kopf.append_owner_reference` reads of the owner (a body read raw may lack
    apiVersion/kind on some paths)."""
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": obj["metadata"]}
