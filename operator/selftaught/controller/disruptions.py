"""Disruptions of a run's stage pods (pure): which stopped pods were disrupted and why, how they
are counted, what the cap says, and how long a stage's pods may take to save when stopped.

A pod stopped from outside the run — a spot node reclaimed or lost, a drain, a preemption, Kueue
evicting its Job's workload, a pod deleted while the stage saved and stopped — is a disruption: it
spends no retry (the Job replaces the pod, or the next attempt is free), but it costs the work done
since the stage last saved, and a stage disrupted again and again would redo that work forever.
So each is counted once, with its cause and cost, in the run's status (keyed by the pods it
stopped, which outlive nothing but the status), and past `retries.disruptionsPerStage` the run
fails with `TooManyDisruptions`.

The pods are watched for how they end (`handlers.py`, `intake.py`); a pod is counted once it is
terminal, when the stage has had its grace period to save and has published the state a restart
continues from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from selftaught.controller.jobs import LABEL_RUN, LABEL_STAGE
from selftaught.errors import Failure, Reason, decode
from selftaught.store.disruptions import Cause, DisruptionRecord, LostWork, causes_text, gpu_time
from selftaught.store.progress import ProgressRecord

#: the DisruptionTarget reasons Kubernetes writes, and what they mean for a run
CAUSES = {
    "DeletionByTaintManager": Cause.NODE_LOST,  # a NoExecute taint: the node is unreachable or not ready
    "DeletionByPodGC": Cause.NODE_LOST,  # the node object is gone
    "TerminationByKubelet": Cause.NODE_SHUTDOWN,  # graceful node shutdown (status.reason Evicted: node pressure)
    "EvictionByEvictionAPI": Cause.EVICTION,  # a drain, the cluster autoscaler, Karpenter
    "PreemptionByScheduler": Cause.PREEMPTION,
}
#: pods stopped together (a node's shards, a Kueue preemption) within this long are one disruption
WINDOW_SECONDS = 120.0
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
JOB_NAME = "batch.kubernetes.io/job-name"

#: the grace period of a stage's pods: Kubernetes' own default at least (a generation shard
#: flushes what it finished), at most the cluster autoscaler's --max-graceful-termination-sec
#: default (a longer grace outlives every reclaim notice and drain anyway)
GRACE_FLOOR = 30
GRACE_CAP = 600
#: before any save was measured: a training checkpoint of a 7-8B judge (16 GB) uploads in ~1-2 min
GRACE_UNMEASURED = {"training": 120}
GRACE_FACTOR, GRACE_MARGIN = 1.5, 10.0


@dataclass(frozen=True)
class PodEnd:
    """A stage pod that stopped without finishing, as the watch last showed it."""

    name: str
    run: str
    job: str
    stage: str
    shard: int
    node: str | None = None
    condition: str | None = None  # its DisruptionTarget reason
    message: str = ""
    evicted: bool = False  # status.reason Evicted: the kubelet evicted it for node pressure
    told: str | None = None  # the reason in the stage's termination message (Disrupted: it saved and stopped)
    at: float | None = None  # when it was disrupted
    began_at: float | None = None
    stopped_at: float | None = None
    terminal: bool = False  # Failed, or gone: it publishes nothing more


def _time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def pod_end(pod: dict[str, Any], deleted: bool = False, now: float | None = None) -> PodEnd | None:
    """What a stage pod's body says about how it stopped; None for a pod that is not a stage's,
    succeeded, or runs on undisturbed. `deleted`: the watch's last word on it; `now`: when the
    watch told, the stop's time when the body has none (a pod deleted while it ran). Whether a
    stop is a disruption is `cause_of`'s to say, with the pod's Job at hand."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    if LABEL_STAGE not in labels or status.get("phase") == "Succeeded":
        return None
    condition = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "DisruptionTarget" and c.get("status") == "True"), None
    )
    if condition is None and not (deleted or meta.get("deletionTimestamp") or status.get("phase") == "Failed"):
        return None
    containers = status.get("containerStatuses") or [{}]
    state = containers[0].get("state") or {}
    terminated = state.get("terminated") or {}
    told = decode(terminated.get("message"))
    index = annotations.get(COMPLETION_INDEX) or labels.get(COMPLETION_INDEX) or "0"
    deletion = _time(meta.get("deletionTimestamp"))
    disrupted = _time(condition.get("lastTransitionTime")) if condition else None
    stopped = _time(terminated.get("finishedAt")) or disrupted or deletion or now
    return PodEnd(
        name=meta.get("name", ""),
        run=labels.get(LABEL_RUN, ""),
        job=labels.get(JOB_NAME) or labels.get("job-name") or "",
        stage=labels[LABEL_STAGE],
        shard=int(index) if str(index).isdigit() else 0,
        node=(pod.get("spec") or {}).get("nodeName"),
        condition=(condition.get("reason") or "DisruptionTarget") if condition else None,
        message=(condition.get("message") if condition else told.message if told else "") or "",
        evicted=status.get("reason") == "Evicted",
        told=told.reason if told else None,
        at=disrupted or deletion or stopped,
        began_at=_time(terminated.get("startedAt") or (state.get("running") or {}).get("startedAt") or status.get("startTime")),
        stopped_at=stopped,
        terminal=deleted or status.get("phase") == "Failed",
    )


def cause_of(end: PodEnd, *, job_exists: bool, suspended: bool) -> Cause | None:
    """Why the pod stopped, or None when that is no disruption (a crash, a failure of its own):
    its DisruptionTarget condition says it (a reason Kubernetes may add later counts as an
    eviction); a pod of a Job that Kueue suspended was preempted by Kueue (suspending a Job is how
    Kueue evicts a workload; the operator never suspends its Jobs); a pod that saved and stopped
    on SIGTERM (`Disrupted`) with no word from the cluster was stopped. A pod whose Job is gone
    went with it (an attempt given up, the run deleted): no disruption."""
    if end.condition:
        if end.condition == "TerminationByKubelet" and end.evicted:
            return Cause.EVICTION  # node pressure, not a shutdown
        return CAUSES.get(end.condition, Cause.EVICTION)
    if not job_exists:
        return None
    if suspended:
        return Cause.KUEUE_PREEMPTION
    return Cause.STOPPED if end.told == Reason.DISRUPTED else None


def counted(records: Iterable[DisruptionRecord]) -> set[str]:
    """The pods already counted."""
    return {pod for record in records for pod in record.pods}


def record_disruption(
    records: list[DisruptionRecord], end: PodEnd, cause: Cause, lost: LostWork, gpus: int, *, whole_job: bool
) -> tuple[list[DisruptionRecord], DisruptionRecord, bool]:
    """The stage's `records` with `end` counted: (records, the record it went into, whether that
    record is new). Pods stopped together are one disruption: other shards, of the same cause on
    the same node (or, for Kueue and a stopped stage, in the same Job) within `WINDOW_SECONDS`; all the pods of a
    Job whose attempt is lost as a whole (multi-node training: `whole_job`, its cost that of the
    whole Job's GPUs, read once) whatever stopped each."""
    at = end.at or end.stopped_at or 0.0
    scoped_by_job = whole_job or cause in (Cause.KUEUE_PREEMPTION, Cause.STOPPED) or not end.node
    for index, old in enumerate(records):
        same_scope = old.attempt == end.job if scoped_by_job else old.node == end.node
        if not (same_scope and (whole_job or old.cause == cause) and abs(old.at - at) <= WINDOW_SECONDS):
            continue
        if not whole_job and end.shard in old.shards:  # the replacement of a pod it stopped: stopped again
            continue
        update: dict[str, Any] = {"pods": [*old.pods, end.name]}
        if whole_job:
            if old.cause == Cause.STOPPED and cause != Cause.STOPPED:  # the rank the cluster stopped says why
                update.update(cause=cause, reason=end.condition or old.reason, message=end.message)
        elif end.shard not in old.shards:
            update.update(
                shards=sorted([*old.shards, end.shard]),
                redone=old.redone + lost.redone if old.redone is not None and lost.redone is not None else None,
                seconds=max(old.seconds, lost.seconds),
                gpu_seconds=old.gpu_seconds + lost.seconds * gpus,
                saved=old.saved and lost.saved,
            )
        joined = old.model_copy(update=update)
        return [*records[:index], joined, *records[index + 1 :]], joined, False
    new = DisruptionRecord(
        stage=end.stage,
        cause=cause,
        reason=end.condition or ("JobSuspended" if cause == Cause.KUEUE_PREEMPTION else end.told or ""),
        message=end.message[:300],
        at=at,
        attempt=end.job or None,
        node=end.node,
        pods=[end.name],
        shards=[end.shard],
        **lost.costs(gpus),
    )
    return [*records, new], new, True


def too_many(label: str, records: list[DisruptionRecord], cap: int) -> Failure | None:
    """The run's failure once a stage was disrupted more than `cap` times."""
    if len(records) <= cap:
        return None
    return Failure.of(
        Reason.TOO_MANY_DISRUPTIONS,
        f"{label} was disrupted {len(records)} times ({causes_text(records)}; {gpu_time(sum(r.gpu_seconds for r in records))} of work "
        f"redone), more than "
        f"retries.disruptionsPerStage ({cap}) allows: raise it, or run the stage on nodes that are not reclaimed (docs/spot.md)",
    )


def describe(record: DisruptionRecord, count: int, cap: int) -> str:
    """The event of a new disruption: what stopped which pods, what it cost, how many are left."""
    what = {
        Cause.NODE_LOST: "lost its node",
        Cause.NODE_SHUTDOWN: "was stopped by its node's shutdown",
        Cause.EVICTION: "was evicted",
        Cause.PREEMPTION: "was preempted by the scheduler",
        Cause.KUEUE_PREEMPTION: "was preempted by Kueue",
        Cause.STOPPED: "was stopped (SIGTERM)",
    }[Cause(record.cause)]
    shards = f"shard {', '.join(map(str, record.shards))}" if record.shards != [0] else "the stage"
    redo = f"{record.redone:,.0f} {record.unit} and " if record.redone is not None and record.unit else ""
    where = f" on {record.node}" if record.node else ""
    return (
        f"{record.stage}: {shards} (pod {', '.join(record.pods)}{where}) {what} ({record.reason or record.cause}); "
        f"{redo}{gpu_time(record.gpu_seconds)} to redo; disruption {count} of at most {cap} (retries.disruptionsPerStage)"
    )


# -- the grace period ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grace:
    seconds: int
    basis: str


def newest_save(records: Iterable[ProgressRecord]) -> tuple[float, str] | None:
    """(seconds, stage) of the newest measured save among progress records: of the stage that
    saved last, its slowest shard (shards save at the same moment when stopped)."""
    saved = [record for record in records if record.saved is not None]
    if not saved:
        return None
    newest = max(saved, key=lambda record: record.saved.at)  # type: ignore[union-attr]
    slowest = max(record.saved.seconds for record in saved if record.stage == newest.stage)  # type: ignore[union-attr]
    return slowest, newest.stage


def grace_period(override: int | None, kind: str, measured: tuple[float, str] | None) -> Grace:
    """The stage pods' terminationGracePeriodSeconds: the spec's, else the time the stage took to
    save before with room to spare (`GRACE_FACTOR` x + `GRACE_MARGIN`: a checkpoint's upload
    varies, the process needs a moment to stop), between `GRACE_FLOOR` and `GRACE_CAP`; before any
    save was measured, the kind's default."""
    if override is not None:
        return Grace(override, "the spec (scheduling terminationGracePeriodSeconds)")
    if measured is None:
        return Grace(GRACE_UNMEASURED.get(kind, GRACE_FLOOR), f"default for {kind} (no save measured yet)")
    seconds, stage = measured
    grace = min(max(math.ceil(GRACE_FACTOR * seconds + GRACE_MARGIN), GRACE_FLOOR), GRACE_CAP)
    return Grace(grace, f"saving took {seconds:.0f}s in {stage} (x{GRACE_FACTOR:g} + {GRACE_MARGIN:.0f}s, {GRACE_FLOOR}-{GRACE_CAP}s)")

