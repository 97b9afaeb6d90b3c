"""What to do about the stages that can run, given the Jobs that exist (pure).

Retries are the operator's: every Job has `backoffLimit: 0`, and a failed stage gets a new Job
(a new attempt, with exponential backoff) until `retries.perStage` is spent. A permanent failure
(bad input, missing model, no training data) fails the run at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.controller.jobs import LABEL_ATTEMPT, LABEL_STAGE
from selftaught.pipeline.planner import Plan
from selftaught.pipeline.table import StageRef

JobState = Literal["active", "succeeded", "failed"]


@dataclass(frozen=True)
class JobView:
    """The little the operator needs to know about a stage Job."""

    name: str
    stage: str
    attempt: int
    state: JobState
    finished_at: float | None = None
    reason: str = ""
    message: str = ""
    permanent: bool = False
    uid: str = ""


def _time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def job_view(job: dict[str, Any], failure: dict[str, Any] | None = None) -> JobView:
    """From a Job (and, when it failed, its failed pod's termination message)."""
    labels = job["metadata"].get("labels", {})
    conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
    state: JobState = "active"
    finished = None
    reason, message, permanent = "", "", False
    if "Complete" in conditions:
        state, finished = "succeeded", _time(conditions["Complete"].get("lastTransitionTime"))
    elif "Failed" in conditions:
        state, finished = "failed", _time(conditions["Failed"].get("lastTransitionTime"))
        condition = conditions["Failed"]
        reason = condition.get("reason") or "JobFailed"
        message = condition.get("message") or ""
        if failure:
            reason = failure.get("reason") or reason
            message = failure.get("message") or message
            permanent = bool(failure.get("permanent"))
        if condition.get("reason") == "DeadlineExceeded":
            reason, message = "DeadlineExceeded", f"the Job ran longer than activeDeadlineSeconds: {message}"
    return JobView(
        name=job["metadata"]["name"],
        stage=labels.get(LABEL_STAGE, ""),
        attempt=int(labels.get(LABEL_ATTEMPT, 0)),
        state=state,
        finished_at=finished,
        reason=reason,
        message=message,
        permanent=permanent,
        uid=job["metadata"].get("uid", ""),
    )


def parse_termination_message(text: str | None) -> dict[str, Any]:
    """Stage processes write JSON; anything else (a crash's log tail) is kept as the message."""
    if not text:
        return {}
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            return data
    except ValueError:
        pass
    return {"reason": "StageCrashed", "message": text.strip()[-1500:]}


@dataclass
class Decision:
    create: list[tuple[StageRef, int]] = field(default_factory=list)
    running: list[tuple[StageRef, JobView]] = field(default_factory=list)
    backoff: list[tuple[StageRef, float]] = field(default_factory=list)
    failure: tuple[str, str] | None = None
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def requeue_after(self) -> float | None:
        return min((wait for _, wait in self.backoff), default=None)


def decide(
    spec: SelfTaughtRunSpec,
    step: Plan,
    jobs: list[JobView],
    retries: dict[str, int],
    now: float,
    *,
    suspended: bool,
) -> Decision:
    decision = Decision(retries={k: v for k, v in retries.items() if v})
    by_stage: dict[str, list[JobView]] = {}
    for view in jobs:
        by_stage.setdefault(view.stage, []).append(view)
    for ref in step.ready:
        views = sorted(by_stage.get(ref.label, []), key=lambda v: v.attempt)
        latest = views[-1] if views else None
        failed = max(decision.retries.get(ref.label, 0), sum(v.state != "active" for v in views))
        if latest is not None and latest.state == "active":
            decision.running.append((ref, latest))
            continue
        if latest is not None:
            # the stage is still not done, so its latest Job failed, or "succeeded" without
            # leaving a manifest: either way one more attempt is spent
            reason = latest.reason if latest.state == "failed" else "NoManifest"
            message = latest.message or f"Job {latest.name} finished but the stage left no manifest"
            decision.retries[ref.label] = failed
            if latest.permanent:
                decision.failure = (reason, f"{ref.label}: {message}")
                return decision
            if failed > spec.retries.per_stage:
                decision.failure = (reason, f"{ref.label} failed {failed} times; last error: {message}")
                return decision
            wait = spec.retries.backoff_seconds * 2 ** (failed - 1) - (now - (latest.finished_at or now))
            if wait > 0:
                decision.backoff.append((ref, wait))
                continue
            attempt = latest.attempt + 1
        else:
            attempt = failed  # Jobs of earlier attempts may be gone (TTL); the count is in status
        if not suspended:
            decision.create.append((ref, attempt))
    return decision
