"""One reconcile of one run: observe (the run, parsed once; its Jobs; its store), accept (the spec
against the run's recorded one), decide (pure: `decide.py`), act (create and delete Jobs, the
judge's server through `serving_actor.py`, events), then the one status write.

Level-triggered: every event on the run or its Jobs (`intake.py`, which drops the echoes of our
own writes: `echoes.py`), a requeue after a backoff, and a periodic fresh re-read all call the
same pass, which re-derives everything from what exists; the work queue makes it one pass at a
time per run. `_write_status` is the only place the run's status is written. Stage pods that
stopped are counted as disruptions before deciding (`_count_disruptions`), so the cap sees them
in the pass that counts them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from selftaught import __version__
from selftaught.api.load import parse_api_object
from selftaught.api.spec import API_GROUP, API_VERSION, KIND, SelfTaughtRun
from selftaught.api.status import Phase
from selftaught.controller import metrics
from selftaught.controller.config import OperatorConfig
from selftaught.controller.decide import UNWATCHED_PODS_SECONDS, Decision, FailedAttempt, JobView, decide, job_view, running_stages
from selftaught.controller.disruptions import Grace, cause_of, counted, describe, grace_period, newest_save, record_disruption
from selftaught.controller.echoes import Echoes, RunKey
from selftaught.controller.intake import Intake
from selftaught.controller.jobs import (
    build_job,
    build_service,
    job_name,
    lost_gpus,
    needs_service,
    owned_by,
    pod_overrides,
    run_owner,
    startup_timeout,
)
from selftaught.controller.kube import InvalidObject, Kube, api_message
from selftaught.controller.refusals import Refusals
from selftaught.controller.report import Reporter
from selftaught.controller.serving_actor import ServerSource, ServingActor
from selftaught.controller.status import History, Observation, build_status, history, is_finished, status_document, status_patch
from selftaught.controller.workqueue import WorkQueue
from selftaught.errors import Failure, InvalidSpec, Reason, SelftaughtError, StorageUnavailable, failure_of
from selftaught.pipeline.planner import plan
from selftaught.pipeline.reuse import Lineage, adopt_or_none, open_lineage, record_all, reused_stages
from selftaught.pipeline.runstore import Acceptance, SnapshotUnreadable, accept, open_run_store
from selftaught.pipeline.scan import Progress, scan
from selftaught.pipeline.table import StageRef
from selftaught.store import Store
from selftaught.store.disruptions import DisruptionRecord, lost_work, write_disruption
from selftaught.store.layout import REPORT, TRACKING, disruption_key, progress_key
from selftaught.store.manifest import Manifest
from selftaught.store.progress import read_progress
from selftaught.views.estimate import estimate, inputs_for, measure, with_reuse
from selftaught.views.eta import completion
from selftaught.views.live import read_view
from selftaught.views.tracking.ledger import describe as describe_tracking
from selftaught.views.tracking.ledger import failures_in as tracking_failures_in

#: (namespace, run name) -> that run's stage Jobs, as the watch last saw them
JobSource = Callable[[str, str], list[dict[str, Any]]]
#: how many of a stage's earlier stages' progress objects are read for its save time (at Job creation)
GRACE_READS = 8

log = logging.getLogger(__name__)


def stage_grace(run: SelfTaughtRun, store: Store, progress: Progress, ref: StageRef) -> Grace:
    """The grace period of a new Job's pods: the spec's, else from the newest save the stage
    measured in an earlier attempt or iteration (a few small reads, once per Job created)."""
    override = pod_overrides(run, ref).termination_grace_period_seconds
    if override is not None:
        return grace_period(override, ref.kind, None)
    earlier = sorted((other for other in progress.progress_keys if other.name == ref.name and other.iteration <= ref.iteration), key=lambda other: -other.iteration)
    for other in earlier[:3]:
        records = [record for key in progress.progress_keys[other][:GRACE_READS] if (record := read_progress(store, key)) is not None]
        if (measured := newest_save(records)) is not None:
            return grace_period(None, ref.kind, measured)
    return grace_period(None, ref.kind, None)


class _Stopped(Exception):
    """The pass ends before deciding: the spec, the store or the run's name stops it."""

    def __init__(self, requeue: float | None = None):
        self.requeue = requeue


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(
        self,
        config: OperatorConfig,
        kube: Kube | None = None,
        jobs: JobSource | None = None,
        clock: Callable[[], float] = time.time,
        servers: ServerSource | None = None,
    ):
        self.config, self.clock = config, clock
        self.kube = kube or Kube()
        self.jobs = jobs or self.kube.list_jobs
        self.report = Reporter(self.kube)
        self.refusals = Refusals()  # Job creates the API server refused: back-off per stage
        self.queue: WorkQueue[RunKey] = WorkQueue(self._pass, min_delay=0.5)
        self.echoes = Echoes()
        self.intake = Intake(self.queue, self.echoes, self._forget)  # what the Kopf handlers call
        self.serving = ServingActor(self.kube, config, self.report, servers or (lambda namespace, run: []))
        self._lock = threading.Lock()
        self._manifests: dict[str, dict[str, Manifest]] = {}  # per store; immutable once written
        self._stores: dict[RunKey, str] = {}  # so a deleted run's manifest cache goes with it
        self._lineages: dict[RunKey, tuple[str, Lineage]] = {}  # spec.reuse: per run, for the spec it was computed from

    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()
        self.kube.stop()

    def _forget(self, key: RunKey) -> None:
        with self._lock:
            uri = self._stores.pop(key, None)
            self._lineages.pop(key, None)
            if uri is not None and uri not in self._stores.values():
                self._manifests.pop(uri, None)
        self.report.forget(*key)

    # -- one pass ----------------------------------------------------------------------------------

    def _pass(self, key: RunKey, fresh: bool) -> float | None:
        started = time.perf_counter()
        obj = None if fresh else self.intake.latest(key)
        if obj is None:
            obj = self.kube.get_run(*key)
            if obj is None:
                self.intake.run_deleted(*key)
                return None
            self.intake.remember(key, obj)
        if obj["metadata"].get("deletionTimestamp"):
            return None
        try:
            requeue = self._reconcile(obj)
        except ApiException as error:
            if error.status != 409:
                raise
            self.intake.drop(key)  # a write lost a race with another: read the run again, soon
            return 1.0
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
        if not is_finished(self.intake.latest(key) or obj):
            # the safety net for missed events: read the run fresh when nothing happened for a
            # while. A finished run needs none: an edit (a new generation) is an event.
            self.queue.resync(key, self.config.resync_seconds)
        return requeue

    def _reconcile(self, obj: dict[str, Any]) -> float | None:
        if is_finished(obj):
            return self._finished(obj)
        seen = Observation(generation=obj["metadata"].get("generation", 1), now=_now(), previous=obj.get("status") or {})
        try:
            run, jobs, store, progress = self._observe(obj, seen)
            acceptance = self._accept(obj, run, jobs, store, progress, seen)
        except _Stopped as stopped:  # `seen` says why
            self._status(obj, seen)
            return stopped.requeue
        decision = self._decide(run, acceptance, store, progress, jobs, seen)
        requeue = self._act(obj, run.model_copy(update={"spec": acceptance.spec}), seen)
        succeeded = seen.plan is not None and seen.plan.finished and not decision.failure
        seen.serving, retry = self.serving.running(obj, run, progress, succeeded=succeeded, failed=bool(decision.failure))
        phase = self._status(obj, seen, jobs)
        self.intake.settle((obj["metadata"]["namespace"], obj["metadata"]["name"]), seen.settled)  # counted in the status written
        if phase.finished:
            return retry
        return min((t for t in (requeue, retry) if t is not None), default=None)

    # -- observe: the run (parsed once), its Jobs, its store -----------------------------------------

    def _observe(self, obj: dict[str, Any], seen: Observation) -> tuple[SelfTaughtRun, list[JobView], Store, Progress]:
        run = self._parse(obj, seen)
        if run is None:
            raise _Stopped()
        try:
            jobs = self._jobs(obj)  # before the store: a Job seen Complete has its manifest there already
            store = open_run_store(run)
            seen.store = store.uri
            return run, jobs, store, self._scan(run, store)
        except StorageUnavailable as error:
            raise _Stopped(self._store_unavailable(obj, seen, str(error))) from None

    def _parse(self, obj: dict[str, Any], seen: Observation | None = None) -> SelfTaughtRun | None:
        """The run as this operator reads it, with the platform's defaults; None when it cannot
        (`seen.invalid` says why)."""
        meta = obj["metadata"]
        document = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], **({"uid": meta["uid"]} if meta.get("uid") else {})},
            "spec": obj.get("spec"),
        }
        try:
            run, ignored = parse_api_object(document, source=f"{KIND} {meta['namespace']}/{meta['name']}")
        except InvalidSpec as error:
            if seen is not None:
                seen.invalid = failure_of(error)
            return None
        if seen is not None:
            if ignored and set(ignored) != set(seen.previous.get("ignoredFields") or []):
                self.report.event(obj, "Warning", "UnknownFields", f"ignored, unknown to operator {__version__}: {', '.join(ignored)}")
            seen.ignored, seen.suspended = ignored, run.spec.suspend
        return self.config.with_defaults(run)

    def _jobs(self, obj: dict[str, Any]) -> list[JobView]:
        """The run's stage Jobs, matched by owner too: a re-created run may briefly see its namesake's."""
        meta = obj["metadata"]
        return [
            job_view(job, self.kube.failure_of(job), self.kube.waiting_of(job))
            for job in self.jobs(meta["namespace"], meta["name"])
            if owned_by(job, meta.get("uid"))
        ]

    def _scan(self, run: SelfTaughtRun, store: Store | None = None) -> Progress:
        """What the store says is done (one listing; manifests are cached: they never change)."""
        store = store or open_run_store(run)
        with self._lock:
            self._stores[(run.metadata.namespace, run.metadata.name)] = store.uri
            manifests = self._manifests.setdefault(store.uri, {})
        return scan(store, manifests)

    def _store_unavailable(self, obj: dict[str, Any], seen: Observation, message: str) -> float | None:
        """Retried for `storage_grace_seconds`, then the run fails."""
        since = seen.previous.get("storeUnreachableSince") or seen.now
        elapsed = self.clock() - datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
        if elapsed >= self.config.storage_grace_seconds:
            seen.failure = Failure.of(Reason.STORAGE_UNAVAILABLE, f"the store was unreachable for {int(elapsed)}s: {message}")
            self.report.event(obj, "Warning", Reason.STORAGE_UNAVAILABLE, seen.failure.message)
            return None
        seen.unavailable, seen.unreachable_since = f"store unreachable: {message}", since
        return 15.0

    # -- accept: the spec against the one the run started with ---------------------------------------

    def _accept(self, obj: dict[str, Any], run: SelfTaughtRun, jobs: list[JobView], store: Store, progress: Progress, seen: Observation) -> Acceptance:
        try:
            acceptance = accept(store, run, progress, busy=running_stages(jobs))
        except SnapshotUnreadable as error:
            seen.invalid = failure_of(error)
            raise _Stopped() from None
        except StorageUnavailable as error:
            raise _Stopped(self._store_unavailable(obj, seen, str(error))) from None
        if acceptance.earlier_uid:
            seen.invalid = Failure.of(
                Reason.RUN_NAME_IN_USE,
                f"{store.uri} holds the data of an earlier run named {run.metadata.name} (uid {acceptance.earlier_uid}) whose spec differs "
                f"in {', '.join(acceptance.refused)}; this run would continue from that data. To start over, delete "
                f"{store.uri}/ or use a new metadata.name; to continue the earlier run, apply its spec",
            )
            if seen.previous.get("phase") != Phase.FAILED:
                self.report.event(obj, "Warning", Reason.RUN_NAME_IN_USE, seen.invalid.message)
            raise _Stopped()
        return acceptance

    # -- decide --------------------------------------------------------------------------------------

    def _decide(self, run: SelfTaughtRun, acceptance: Acceptance, store: Store, progress: Progress, jobs: list[JobView], seen: Observation) -> Decision:
        spec = acceptance.spec
        seen.refused, seen.shards, seen.progress = acceptance.refused, spec.generation.shards, progress
        seen.plan = step = plan(spec, progress.done)
        remembered = history(seen.previous)
        accepted = run.model_copy(update={"spec": spec})
        disrupted = self._count_disruptions(accepted, store, jobs, remembered, seen)
        seen.decision = decision = decide(
            spec, step, jobs, remembered.attempts, remembered.failures, self.clock(),
            created_at=remembered.created_at, disrupted_attempts=remembered.disrupted_attempts,
            suspended=run.spec.suspend, generation=seen.generation, startup_timeout=lambda ref: startup_timeout(run, ref),
            disrupted=disrupted, grace=remembered.grace,
        )  # fmt: skip
        for ref, _ in decision.create:  # how long its pods may take to save when stopped
            decision.grace[ref.label] = stage_grace(accepted, store, progress, ref)
        # the cost, corrected by the finished stages; how far the running ones are (a small read
        # per shard that has written progress: never per item)
        seen.estimate = with_reuse(estimate(spec, inputs_for(spec), measure(progress.manifests)), reused_stages(progress.manifests))
        seen.live = [view for ref, _ in decision.running if (view := read_view(store, ref, progress, spec.generation.shards)) is not None]
        seen.completion = completion(spec, seen.estimate, seen.live)
        # the stage process that finishes the run writes it there (a moment after its manifest,
        # which may be the last thing this operator reads of a finished run)
        seen.report = store.url(REPORT) if progress.report or step.finished else None
        # what the stage processes could not log to the run's tracking servers (their records in the store)
        seen.tracking = [describe_tracking(failure) for failure in tracking_failures_in(progress.tracking_keys, store.read_bytes)]
        return decision

    def _count_disruptions(
        self, run: SelfTaughtRun, store: Store, jobs: list[JobView], remembered: History, seen: Observation
    ) -> dict[str, list[DisruptionRecord]]:
        """The stages' disruptions with the pods that stopped since the last pass counted (each
        once: the status keeps the pods it counted), their cost read from the stage's progress
        objects, and each new or grown record put in the store too (for `selftaught status`)."""
        meta = run.metadata
        views = {view.name: view for view in jobs}
        disrupted = {label: list(records) for label, records in remembered.disrupted.items()}
        for end in self.intake.pod_ends((meta.namespace, meta.name)):
            seen.settled.append(end.name)
            records = disrupted.get(end.stage, [])
            view = views.get(end.job)
            cause = cause_of(end, job_exists=view is not None, suspended=bool(view and view.suspended))
            if cause is None or end.name in counted(records):
                continue
            try:
                ref = StageRef.parse(end.stage)
            except ValueError:  # a pod labelled by someone else
                continue
            whole_job = needs_service(run, ref)
            if ref.kind == "training":  # rank 0 publishes a training's progress
                end = dataclasses.replace(end, shard=0)
            published = read_progress(store, progress_key(ref.prefix, end.shard))
            lost = lost_work(published, began_at=end.began_at, stopped_at=end.stopped_at)
            before = sum(old.gpu_seconds for old in records)
            disrupted[end.stage], counted_in, new = record_disruption(records, end, cause, lost, lost_gpus(run, ref), whole_job=whole_job)
            metrics.REDONE_GPU_SECONDS.labels(ref.name).inc(sum(now.gpu_seconds for now in disrupted[end.stage]) - before)
            if new:
                seen.disruptions.append((counted_in, len(disrupted[end.stage])))
            try:  # a courtesy for `selftaught status`: the status has the truth
                write_disruption(store, disruption_key(ref.prefix, counted_in.pods[0]), counted_in)
            except StorageUnavailable as error:
                log.warning("disruption of %s not written to the store: %s", end.stage, error)
        return disrupted

    # -- act -----------------------------------------------------------------------------------------

    def _act(self, obj: dict[str, Any], accepted: SelfTaughtRun, seen: Observation) -> float | None:
        """Delete the Jobs whose pods never started, create the ones decided on; when to look again."""
        decision = seen.decision
        assert decision is not None  # decided this pass
        requeue = decision.requeue_after
        cap = accepted.spec.retries.disruptions_per_stage
        before = {line.split(":", 1)[0] for line in seen.previous.get("tracking") or []}
        for line in seen.tracking:  # once per server that stops taking the run, not once per stage it misses
            if line.split(":", 1)[0] not in before:
                self.report.event(obj, "Warning", "TrackingFailed", line)
        for record, count in seen.disruptions:
            self.report.event(obj, "Warning", "StageDisrupted", describe(record, count, cap))
            metrics.DISRUPTIONS.labels(record.stage.split("-")[0], record.cause).inc()
        for _, view in decision.stop:  # disrupted past the cap: no more work redone
            self.kube.delete_job(accepted.metadata.namespace, view.name)
        if decision.failure is not None and decision.failure.reason == Reason.TOO_MANY_DISRUPTIONS:
            self.report.event(obj, "Warning", Reason.TOO_MANY_DISRUPTIONS, decision.failure.message)
        for ref, view in decision.expire:
            self.kube.delete_job(accepted.metadata.namespace, view.name)
            self.report.event(obj, "Warning", Reason.STAGE_START_TIMEOUT, f"{ref.label} (Job {view.name}): {decision.failures[ref.label].failure}")
        for ref, attempt in decision.vanished:
            self.report.event(obj, "Warning", Reason.JOB_DELETED, f"{ref.label}: the Job of attempt {attempt} was deleted before it finished; counted as a failed attempt")
        lineage = self._lineage(obj, accepted, seen.progress)

        def not_reused(text: str) -> None:  # a source that cannot be used: the stage runs, and the user is told why
            log.warning("%s/%s: %s", accepted.metadata.namespace, accepted.metadata.name, text)
            self.report.event(obj, "Warning", "StageNotReused", text)

        for ref, attempt in list(decision.create):
            if (held := self.refusals.holding(self._refusal_key(obj, ref.label), self.clock())) is not None:
                decision.create.remove((ref, attempt))  # refused before: not again until its back-off is over
                decision.attempts[ref.label] = attempt
                seen.unavailable, seen.unavailable_reason = held.status(ref.label, self.clock()), held.reason
                requeue = min(requeue or held.due - self.clock(), held.due - self.clock())
                continue
            if lineage is not None and (adopted := adopt_or_none(lineage, ref, self._store_of(accepted), accepted.spec, not_reused)) is not None:
                decision.create.remove((ref, attempt))
                decision.attempts[ref.label] = attempt  # no Job: not an attempt
                self.report.event(obj, "Normal", "StageReused", f"{ref.label}: linked from {adopted.source} ({adopted.how}), not run again")
                requeue = 0.5  # the next pass sees it done and starts what follows
                continue
            try:
                created = self._create(obj, accepted, ref, attempt, decision.grace.get(ref.label))
            except InvalidObject as error:  # the server will refuse this Job every time: say so, once
                decision.failures[ref.label] = FailedAttempt(attempt, Failure.of(Reason.INVALID_JOB, str(error)), self.clock(), seen.generation)
                decision.failure = Failure.of(Reason.INVALID_JOB, f"{ref.label}: the API server refused the Job: {error}")
            except ApiException as error:  # e.g. the API server is overloaded, a policy forbids it: not an attempt
                decision.attempts[ref.label] = attempt
                wait = self._refused(obj, accepted, seen, ref.label, error)
                requeue = min(requeue or wait, wait)
            else:
                self.refusals.clear(self._refusal_key(obj, ref.label))
                if created is not None:  # the status says it runs now, not one status write later
                    decision.running.append((ref, job_view(created, None, self.kube.waiting_of(created))))
                    requeue = min(requeue or UNWATCHED_PODS_SECONDS, UNWATCHED_PODS_SECONDS)  # its pods, as decide asks
        return requeue

    def _lineage(self, obj: dict[str, Any], run: SelfTaughtRun, progress: Progress | None) -> Lineage | None:
        """The run's stage keys when `spec.reuse` is on, computed once per accepted spec (they read
        the data's and models' identities), with every stage it finished put in the index (once per
        stage and operator process). None, and a warning, when the identities cannot be read now:
        the stages then run, as without reuse."""
        if not run.spec.reuse.enabled:
            return None
        key, spec = (obj["metadata"]["namespace"], obj["metadata"]["name"]), run.spec.model_dump_json()
        cached = self._lineages.get(key)
        try:
            if cached is None or cached[0] != spec:
                cached = self._lineages[key] = (spec, open_lineage(run.spec))
            if progress is not None:
                record_all(cached[1], progress.manifests, self._store_of(run))
        except SelftaughtError as error:
            log.warning("%s/%s: reuse skipped this pass: %s", *key, error)
            return None
        return cached[1]

    @staticmethod
    def _store_of(run: SelfTaughtRun) -> Store:
        return open_run_store(run)

    @staticmethod
    def _refusal_key(obj: dict[str, Any], label: str) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return meta["namespace"], meta["name"], label

    def _refused(self, obj: dict[str, Any], run: SelfTaughtRun, seen: Observation, label: str, error: ApiException) -> float:
        """A create the API server refused: said once per refusal (a changed message is a new one),
        tried again after a back-off that doubles with each refusal. Seconds until the next try."""
        detail = api_message(error)
        reason = Reason.JOB_REFUSED if error.status == 403 else "JobCreateFailed"
        held, new = self.refusals.refused(self._refusal_key(obj, label), reason, detail, run.spec.retries.backoff_seconds, self.clock())
        if new:
            self.report.event(obj, "Warning", reason, f"{label}: {detail}")
        seen.unavailable, seen.unavailable_reason = held.status(label, self.clock()), reason
        return held.due - self.clock()

    def _create(self, obj: dict[str, Any], run: SelfTaughtRun, ref: StageRef, attempt: int, grace: Grace | None = None) -> dict[str, Any] | None:
        """The Job as created, or None when it existed (an earlier pass, or operator, made it)."""
        job = build_job(run, ref, attempt, self.config, grace.seconds if grace else None)
        kopf.append_owner_reference(job, owner=run_owner(obj))
        created = self.kube.create_job(job)
        if created is None:
            return None  # and its Service
        self.echoes.job_created(created)
        if needs_service(run, ref):  # owned by its Job: collected with it, retry after retry
            service = build_service(run, ref, attempt)
            kopf.append_owner_reference(service, owner=created)
            self.kube.create_service(service)
        self.report.job_created(obj, ref.name, ref.label, attempt, job_name(run.metadata.name, ref, attempt))
        return created

    def _finished(self, obj: dict[str, Any]) -> float | None:
        """A finished run is left alone until it is edited, but for its judge's server: kept in
        place, its readiness written into `status.serving`. Its pods that stopped count no more."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.intake.settle(key, [end.name for end in self.intake.pod_ends(key)])
        status = obj.get("status") or {}
        tracking = (obj.get("spec") or {}).get("tracking") or {}
        if tracking.get("mlflow") or tracking.get("wandb"):
            status = self._tracking_after_the_end(obj, status)
        if not (((obj.get("spec") or {}).get("serve") or {}).get("enabled") or status.get("serving")):
            self._write_status(obj, status)
            return None
        run = self._parse(obj)
        if run is None:
            self._write_status(obj, status)
            return None
        serving, retry = self.serving.finished(obj, run, self._scan)
        document = {key: value for key, value in status.items() if key != "serving"}
        if serving is not None:
            document["serving"] = serving.model_dump(mode="json", by_alias=True, exclude_none=True)
        self._write_status(obj, document)
        return retry

    def _tracking_after_the_end(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """`status.tracking` of a finished run, read again: the last stage logs after it published,
        so the pass that saw the run finish may not have seen what that stage could not log (its
        Job's end brings this pass)."""
        run = self._parse(obj)
        if run is None:
            return status
        try:
            lines = [describe_tracking(failure) for failure in tracking_failures_in(*_ledger(open_run_store(run)))]
        except Exception:  # the store, for a moment: the next event looks again
            log.warning("%s/%s: the tracking ledger could not be read", run.metadata.namespace, run.metadata.name, exc_info=True)
            return status
        before = {line.split(":", 1)[0] for line in status.get("tracking") or []}
        for line in lines:
            if line.split(":", 1)[0] not in before:
                self.report.event(obj, "Warning", "TrackingFailed", line)
        document = {key: value for key, value in status.items() if key != "tracking"}
        return {**document, "tracking": lines} if lines else document

    # -- the status --------------------------------------------------------------------------------

    def _status(self, obj: dict[str, Any], seen: Observation, jobs: list[JobView] | None = None) -> Phase:
        """The status derived from `seen`, written; its phase. With the pass's `jobs`: the events
        and metrics of what changed since the last pass too."""
        status = build_status(seen)
        document = status_document(status)
        if jobs is not None:
            self.report.changes(obj, seen, jobs, document.get("iterations", []))
        self._write_status(obj, document)
        return Phase(status.phase)

    def _write_status(self, obj: dict[str, Any], document: dict[str, Any]) -> None:
        """The one status write: `document` in place of the run's status, when it differs (a
        merge patch; its echo starts no pass), and an event when the phase changed."""
        meta, previous = obj["metadata"], obj.get("status") or {}
        key = (meta["namespace"], meta["name"])
        phase = document.get("phase")
        self.report.phase(*key, phase)
        if previous == document:
            return
        written = self.kube.patch_status(*key, status_patch(previous, document))
        self.echoes.status_written(key, written)
        self.intake.remember(key, written)
        if previous.get("phase") != phase:
            self.report.event(obj, "Warning" if phase == Phase.FAILED else "Normal", f"Run{phase}", document.get("message") or "")


def _ledger(store: Store) -> tuple[list[str], Any]:
    """The tracking ledger's keys (one listing of `tracking/`) and how to read one."""
    return store.list(TRACKING), store.read_bytes

