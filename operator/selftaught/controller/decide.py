"""What to do about the stages that can run, given the Jobs that exist (pure).

Retries are the operator's: every Job has no retries of its own, and a failed stage gets a new Job
(a new attempt, with exponential backoff) until `retries.perStage` is spent. Attempts are counted
when a Job is *created* (in the run's status), so a Job that vanishes — deleted by its TTL, by
someone, or while the operator was down — still counts, and retries are always bounded. A Job
whose pods cannot start (an image that does not pull, a Secret that does not exist, no node that
fits) is given `startupTimeoutSeconds`, then its attempt fails with the reason its pods gave; the
clock starts when the Job started or when the waiting pod was created, whichever is later, so the
replacement of a pod lost to a spot reclaim gets the whole timeout (not a retry spent at once). A
permanent failure (bad input, missing model, an invalid Job) fails the run at once — until the
run's spec is edited, which may have fixed it. Disruptions (`disruptions.py`) spend no retry, but
a stage disrupted more than `retries.disruptionsPerStage` times fails the run and its Job is
stopped: an endless loop of redone work becomes a failure that says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.controller.disruptions import Grace, too_many
from selftaught.controller.jobs import LABEL_ATTEMPT, LABEL_STAGE
from selftaught.errors import Failure, Reason, decode
from selftaught.pipeline.planner import Plan
from selftaught.pipeline.table import StageRef
from selftaught.store.disruptions import DisruptionRecord

JobState = Literal["active", "succeeded", "failed"]
#: a Job created this recently may not have reached the watch yet: not "vanished"
CREATE_GRACE_SECONDS = 10.0
#: how soon an active Job whose pods are not ready is looked at again (pods are not watched)
UNWATCHED_PODS_SECONDS = 10.0
#: how much of a crashed stage's log a user is shown: the end, where the error is
LOG_TAIL = 1500


@dataclass(frozen=True)
class Waiting:
    """Why a Job's pods are not running (yet): queued in Kueue, or a startup problem."""

    reason: str  # ImagePullBackOff, CreateContainerConfigError, Unschedulable, FailedCreate, Queued...
    message: str
    queued: bool = False  # held by Kueue: waiting for quota is not a startup failure
    #: since when the waiting pod has waited (its creation): a replacement after a disruption
    #: starts its own clock, as Kueue's recovery timeout runs from the last PodsReady=False
    since: float | None = None
    pod: str | None = None  # the pod that waits


def is_gang(job: dict[str, Any]) -> bool:
    """A multi-node training Job: its ranks rendezvous through a headless Service (the pods'
    subdomain), so it is running only once every rank is."""
    return bool((((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("subdomain"))


def all_ready(job: dict[str, Any]) -> bool:
    """A pod of it is ready — for a gang, every rank."""
    ready = (job.get("status") or {}).get("ready") or 0
    return bool(ready) and (not is_gang(job) or ready >= ((job.get("spec") or {}).get("parallelism") or 1))


@dataclass(frozen=True)
class JobView:
    """The little the operator needs to know about a stage Job."""

    name: str
    stage: str
    attempt: int
    state: JobState
    finished_at: float | None = None
    failure: Failure | None = None  # why it failed (a failed Job always says something)
    uid: str = ""
    started_at: float | None = None  # when its pods could start (Job startTime; not while queued)
    waiting: Waiting | None = None
    ready: bool = False  # a pod of it is running (of a multi-node training, every rank)
    suspended: bool = False  # held (or evicted) by Kueue


def _time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def job_view(job: dict[str, Any], told: Failure | None = None, waiting: Waiting | None = None) -> JobView:
    """From a Job (and, when it failed, what its failed pod `told`: its termination message)."""
    labels = job["metadata"].get("labels", {})
    status = job.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    state: JobState = "active"
    finished = None
    failure = None
    if "Complete" in conditions:
        state, finished = "succeeded", _time(conditions["Complete"].get("lastTransitionTime"))
    elif "Failed" in conditions:
        state, finished = "failed", _time(conditions["Failed"].get("lastTransitionTime"))
        condition = conditions["Failed"]
        failure = Failure(condition.get("reason") or Reason.JOB_FAILED, condition.get("message") or "")
        if told:
            failure = Failure(told.reason or failure.reason, told.message or failure.message, told.permanent)
        if condition.get("reason") == "DeadlineExceeded":
            failure = Failure(Reason.DEADLINE_EXCEEDED, f"the Job ran longer than activeDeadlineSeconds: {failure.message}", failure.permanent)
    suspended = bool((job.get("spec") or {}).get("suspend"))
    return JobView(
        name=job["metadata"]["name"],
        stage=labels.get(LABEL_STAGE, ""),
        attempt=int(labels.get(LABEL_ATTEMPT, 0)),
        state=state,
        finished_at=finished,
        failure=failure,
        uid=job["metadata"].get("uid", ""),
        started_at=None if suspended else _time(status.get("startTime")),
        waiting=waiting,
        ready=all_ready(job),
        suspended=suspended,
    )


#: what a SIGKILL (exit 137) that the kubelet did not call OOMKilled may have been
SIGKILL_CAUSES = "a liveness probe, a preStop hook or a grace period that ran out, an eviction, or a process of the pod's own"


def parse_termination_message(
    text: str | None,
    exit_code: int | None = None,
    container_reason: str | None = None,
    pod_reason: str | None = None,
    pod_message: str | None = None,
) -> Failure | None:
    """A failed pod's termination message: what the stage wrote (`errors.decode`), or else, for a
    crash's log tail (FallbackToLogsOnError) or nothing at all, a failure whose message keeps the
    *end* of the text, where the error is, and names the exit code and the container's
    termination reason. Exit 137 is `OOMKilled` only when the kubelet says so (the container's
    reason): any other SIGKILL is named as one. A pod that failed with a reason of its own and no
    container's word (`Evicted` for node pressure, the kubelet's admission: `OutOfnvidia.com/gpu`,
    `NodeAffinity`) passes that reason and message through. None: no pod said anything."""
    told = decode(text)
    if told is not None:
        return told
    said = f"pod status {pod_reason}: {pod_message}".rstrip(": ") if pod_reason else ""
    if not text and exit_code is None:
        return Failure(pod_reason, said) if pod_reason else None  # else the Job's own condition tells (DeadlineExceeded, ...)
    how = f"exit code {exit_code}" if exit_code is not None else "the stage died"
    if container_reason and container_reason not in ("Error", "Completed"):
        how += f" ({container_reason})"
    elif exit_code == 137:
        how += f" (SIGKILL, not the memory limit: {SIGKILL_CAUSES})"
    if said:
        how += f"; {said}"
    reason = Reason.OOM_KILLED if container_reason == "OOMKilled" else Reason.STAGE_CRASHED
    tail = (text or "").strip()
    if len(tail) > LOG_TAIL:
        tail = "…" + tail[-LOG_TAIL:]
    return Failure.of(reason, f"{how}; last log lines: {tail}" if tail else how)


@dataclass(frozen=True)
class FailedAttempt:
    """One failed attempt of a stage, as the status keeps it (the Job may be long gone)."""

    attempt: int
    failure: Failure
    at: float
    generation: int = 0  # the run's generation when it failed: an edit looks at a permanent failure again

    @property
    def disrupted(self) -> bool:
        """A node drain, preemption or eviction: not the stage's fault, and no retry spent."""
        return self.failure.reason == Reason.DISRUPTED


@dataclass
class Decision:
    create: list[tuple[StageRef, int]] = field(default_factory=list)
    running: list[tuple[StageRef, JobView]] = field(default_factory=list)
    backoff: list[tuple[StageRef, float]] = field(default_factory=list)
    #: Jobs whose pods never started within the startup timeout: delete them, the attempt failed
    expire: list[tuple[StageRef, JobView]] = field(default_factory=list)
    #: stages whose latest Job vanished before it finished (TTL, someone deleted it)
    vanished: list[tuple[StageRef, int]] = field(default_factory=list)
    #: the run's failure: a permanent one, or the last of a stage whose retries are spent
    failure: Failure | None = None
    #: Jobs of stages disrupted more than the cap allows: delete them, the run failed
    stop: list[tuple[StageRef, JobView]] = field(default_factory=list)
    #: Jobs created per stage (attempts), when the latest was created, each stage's last failure,
    #: its attempts ended by a disruption (free), its disruptions and its pods' grace period:
    #: written to the status, which is where they survive the Jobs
    attempts: dict[str, int] = field(default_factory=dict)
    created_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, FailedAttempt] = field(default_factory=dict)
    disrupted_attempts: dict[str, int] = field(default_factory=dict)
    disrupted: dict[str, list[DisruptionRecord]] = field(default_factory=dict)
    grace: dict[str, Grace] = field(default_factory=dict)
    requeue: float | None = None

    @property
    def requeue_after(self) -> float | None:
        waits = [wait for _, wait in self.backoff] + ([self.requeue] if self.requeue is not None else [])
        return min(waits, default=None)


def decide(
    spec: SelfTaughtRunSpec,
    step: Plan,
    jobs: list[JobView],
    attempts: dict[str, int],
    failures: dict[str, FailedAttempt],
    now: float,
    created_at: dict[str, float] | None = None,
    disrupted_attempts: dict[str, int] | None = None,
    *,
    suspended: bool,
    generation: int = 0,
    startup_timeout: Callable[[StageRef], float | None] = lambda ref: None,
    disrupted: dict[str, list[DisruptionRecord]] | None = None,
    grace: dict[str, Grace] | None = None,
) -> Decision:
    decision = Decision(
        attempts={k: v for k, v in attempts.items() if v},
        created_at=dict(created_at or {}),
        failures=dict(failures),
        disrupted_attempts=dict(disrupted_attempts or {}),
        disrupted={label: list(records) for label, records in (disrupted or {}).items() if records},
        grace=dict(grace or {}),
    )
    by_stage: dict[str, list[JobView]] = {}
    for view in jobs:
        by_stage.setdefault(view.stage, []).append(view)
    for ref in step.ready:
        label = ref.label
        views = sorted(by_stage.get(label, []), key=lambda v: v.attempt)
        latest = views[-1] if views else None
        # Jobs that exist count even if the status never recorded their creation (a lost write)
        created = max(decision.attempts.get(label, 0), latest.attempt + 1 if latest else 0)
        decision.attempts[label] = created
        last = decision.failures.get(label)
        if (failure := too_many(label, decision.disrupted.get(label, []), spec.retries.disruptions_per_stage)) is not None:
            if latest is not None and latest.state == "active":  # no more work redone: its pods stop now
                decision.stop.append((ref, latest))
                decision.failures[label] = FailedAttempt(latest.attempt, failure, now, generation)
                decision.disrupted_attempts[label] = decision.disrupted_attempts.get(label, 0) + 1  # a raised cap resumes it free
            decision.failure = failure
            return decision
        if latest is not None and latest.attempt == created - 1:
            if latest.state == "active":
                timeout = startup_timeout(ref)
                waiting = latest.waiting
                since = max(latest.started_at or 0.0, (waiting.since if waiting else None) or 0.0) or None
                if waiting and not waiting.queued and timeout and since and now - since >= timeout:
                    decision.expire.append((ref, latest))
                    failure = Failure(waiting.reason, f"pods did not start within {int(timeout)}s: {waiting.message}")
                    last = FailedAttempt(latest.attempt, failure, now, generation)
                else:
                    decision.running.append((ref, latest))
                    if waiting and not waiting.queued:  # come back when the timeout is due
                        due = ((since or now) + timeout - now) if timeout else 60.0
                        decision.requeue = min(decision.requeue or due, max(due, 1.0), 30.0)
                    elif not waiting and not latest.ready:  # pods are not watched: look again soon
                        decision.requeue = min(decision.requeue or UNWATCHED_PODS_SECONDS, UNWATCHED_PODS_SECONDS)
                    continue
            elif latest.state == "failed":
                seen_in = last.generation if last is not None and last.attempt == latest.attempt else None
                failure = latest.failure or Failure(Reason.JOB_FAILED, "")
                last = FailedAttempt(latest.attempt, failure, latest.finished_at or now, generation if seen_in is None else seen_in)
                if last.disrupted and seen_in is None:
                    decision.disrupted_attempts[label] = decision.disrupted_attempts.get(label, 0) + 1  # counted once
            else:  # "succeeded" without the stage's manifest
                failure = Failure.of(Reason.NO_MANIFEST, f"Job {latest.name} finished but the stage left no manifest")
                last = FailedAttempt(latest.attempt, failure, latest.finished_at or now, generation)
        elif created and (last is None or last.attempt < created - 1):
            if now - decision.created_at.get(label, 0.0) < CREATE_GRACE_SECONDS:
                decision.requeue = min(decision.requeue or 5.0, 5.0)  # just created: the watch will bring it
                continue
            # the latest attempt's Job is gone and its outcome was never seen
            failure = Failure.of(Reason.JOB_DELETED, f"the Job of attempt {created - 1} was deleted before it finished")
            last = FailedAttempt(created - 1, failure, now, generation)
            decision.vanished.append((ref, created - 1))
        if last is not None and last.attempt == created - 1:
            decision.failures[label] = last
            failure = last.failure
            if failure.permanent and last.generation == generation:
                decision.failure = Failure(failure.reason, f"{label}: {failure.message}", failure.permanent)
                return decision
            # every attempt so far was created and none finished the stage; disruptions are free
            failed = created - decision.disrupted_attempts.get(label, 0)
            if failed > spec.retries.per_stage:
                decision.failure = Failure(failure.reason, f"{label} failed {failed} times; last error: {failure.message}", failure.permanent)
                return decision
            wait = spec.retries.backoff_seconds * 2 ** max(failed - 1, 0) - (now - last.at)
            if wait > 0:
                decision.backoff.append((ref, wait))
                continue
        if not suspended:
            decision.create.append((ref, created))
            decision.attempts[label] = created + 1
            decision.created_at[label] = now
    return decision


def running_stages(jobs: list[JobView]) -> set[StageRef]:
    """Stages with an active Job: it runs with the recorded spec, so an edit of a field that stage
    depends on is not accepted while it runs (it could publish what the old value produced)."""
    running = set()
    for view in jobs:
        if view.state == "active":
            with contextlib.suppress(ValueError):  # a Job labelled by someone else
                running.add(StageRef.parse(view.stage))
    return running
