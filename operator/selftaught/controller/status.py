"""The run's status from what the operator observed (pure).

Conditions follow the API conventions and are read by GitOps tools: `Succeeded` (Unknown →
True/False) for the bounded run, `Ready` for Argo CD/Flux, kstatus' `Reconciling` and `Stalled`,
plus `Suspended` and `SpecAccepted`. `phase`, `stage` and `iteration` are derived, for printer
columns. A condition's lastTransitionTime moves only when its status does, so an unchanged run
produces an unchanged status and no write.

And what a status says back: the attempts it remembers (`history`, decide's input: they outlive
the Jobs) and whether the run is finished (`is_finished`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from selftaught.api.status import (
    Condition,
    Disruption,
    IterationSummary,
    Phase,
    RunCompletion,
    RunDisruptions,
    RunEstimate,
    RunProgress,
    SelfTaughtRunStatus,
    ServingStatus,
    StageAttempts,
    StageFailure,
    StageProgress,
)
from selftaught.controller.decide import Decision, FailedAttempt
from selftaught.controller.disruptions import Grace
from selftaught.errors import Failure, Reason, ReasonClass, as_reason, clip, reason_class
from selftaught.pipeline.planner import Plan
from selftaught.pipeline.runstore import refusal_message
from selftaught.pipeline.scan import Progress, iteration_summaries, skipped_counts
from selftaught.store.disruptions import Cause, DisruptionRecord, causes, summary
from selftaught.views.estimate import Estimate
from selftaught.views.eta import Completion
from selftaught.views.live import StageView, duration


@dataclass
class Observation:
    """Everything the status is derived from."""

    generation: int
    now: str
    previous: dict[str, Any]
    store: str | None = None
    plan: Plan | None = None
    progress: Progress | None = None
    decision: Decision | None = None
    shards: int = 1
    suspended: bool = False
    refused: list[str] = field(default_factory=list)
    unreachable_since: str | None = None  # the store has not answered since (RFC 3339)
    invalid: Failure | None = None  # why the spec cannot be used at all: InvalidSpec, SnapshotUnreadable, RunNameInUse
    ignored: list[str] = field(default_factory=list)  # spec fields this operator does not know
    failure: Failure | None = None  # a terminal failure found outside `decision`
    unavailable: str | None = None  # the store or the API refuses us right now; retrying
    unavailable_reason: str | None = None  # why, as the Reconciling condition's reason (JobRefused)
    live: list[StageView] = field(default_factory=list)  # progress inside the running stages
    estimate: Estimate | None = None  # the run's cost, corrected by its finished stages
    completion: Completion | None = None  # how much of the whole run is done, how long it has left
    report: str | None = None  # where the run's HTML report is, once it is there
    tracking: list[str] = field(default_factory=list)  # what the run's tracking servers have not got, and why
    serving: ServingStatus | None = None  # the judge's server (spec.serve)
    settled: list[str] = field(default_factory=list)  # stopped pods this pass looked at (counted or not)
    disruptions: list[tuple[DisruptionRecord, int]] = field(default_factory=list)  # new this pass, with the stage's count


def _condition(previous: list[dict[str, Any]], kind: str, status: str, reason: str, message: str, generation: int, now: str) -> Condition:
    old = next((c for c in previous if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    return Condition(
        type=kind,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        message=clip(message),
        last_transition_time=now if changed else old.get("lastTransitionTime", now),  # type: ignore[union-attr]
        observed_generation=generation,
    )


def _progress_message(seen: Observation, step: Plan, progress: Progress) -> tuple[str | None, int | None, str]:
    """(stage, iteration, message) of the front of the run."""
    decision = seen.decision
    current = step.current
    if current is None:
        last = step.done[-1] if step.done else None
        return (last.label if last else None), (last.iteration if last else None), "all stages done"
    parts = []
    for ref, view in decision.running if decision else []:
        done = progress.shards_done.get(ref, 0)
        shards = seen.shards if ref.sharded else 1
        retry = f", retry {view.attempt}" if view.attempt else ""
        if disrupted := len(decision.disrupted.get(ref.label, [])):  # type: ignore[union-attr]
            retry += f", disrupted {disrupted}x"
        if view.waiting is not None and view.waiting.queued:
            parts.append(f"{ref.label} queued{retry}: {view.waiting.message}")
        elif view.waiting is not None:
            parts.append(f"{ref.label} not starting{retry}: {view.waiting.reason}: {view.waiting.message}")
        else:
            parts.append(f"{ref.label} running ({done}/{shards} shards{retry})" if ref.sharded else f"{ref.label} running{retry}")
    for ref, wait in decision.backoff if decision else []:
        parts.append(f"{ref.label} failed, retrying in {int(wait)}s")
    if not parts:
        parts.append(f"{current.label} next")
    return current.label, current.iteration, "; ".join(parts)


def build_status(seen: Observation) -> SelfTaughtRunStatus:
    """The typed status (the same model the CRD schema is generated from)."""
    previous = seen.previous or {}
    conditions_before = previous.get("conditions") or []
    generation, now = seen.generation, seen.now
    failure = seen.invalid or seen.failure or (seen.decision.failure if seen.decision else None)
    fields: dict[str, Any] = {}
    stage = iteration = None
    step, progress = seen.plan, seen.progress
    if step is not None and progress is not None:
        stage, iteration, message = _progress_message(seen, step, progress)
        iterations = [IterationSummary.model_validate(row) for row in iteration_summaries(progress)]
        accuracies = [row.accuracy for row in iterations if row.accuracy is not None]
        fields.update(
            stages_done=len(step.done),
            stages_total=step.total,
            iterations=iterations,
            skipped=skipped_counts(progress) or None,
            latest_accuracy=accuracies[-1] if accuracies else None,
            latest_overall=next((row.overall for row in reversed(iterations) if row.overall is not None), None),
            active=[
                StageProgress(
                    stage=ref.label,
                    shards_done=progress.shards_done.get(ref, 0),
                    shards=seen.shards if ref.sharded else 1,
                    attempt=view.attempt,
                    job=view.name,
                    waiting=f"{view.waiting.reason}: {view.waiting.message}" if view.waiting else None,
                )
                for ref, view in (seen.decision.running if seen.decision else [])
            ],
        )
    else:
        message = previous.get("message") or ""
    if seen.estimate is not None:
        fields["estimate"] = run_estimate(seen.estimate)
    elif previous.get("estimate"):
        fields["estimate"] = RunEstimate.model_validate(previous["estimate"])
    if step is not None:
        fields["completion"] = run_completion(step, None if step.finished else seen.completion)
    shown = front(seen.live) if seen.decision and seen.decision.running else None
    if shown is not None:
        fields["progress"] = run_progress(shown)
    finished = step is not None and step.finished and not failure
    if failure:
        phase, message = Phase.FAILED, str(failure)
    elif finished:
        phase = Phase.SUCCEEDED
        accuracy, overall = fields.get("latest_accuracy"), fields.get("latest_overall")
        message = (
            f"{step.total} stages done"  # type: ignore[union-attr]
            + (f"; latest accuracy {accuracy:.3f}" if accuracy is not None else "")
            + (f", benchmark overall {overall:.3f}" if overall is not None else "")
        )
    elif seen.suspended:
        phase = Phase.SUSPENDED
        running = len(seen.decision.running) if seen.decision else 0
        message = "suspended" + (f"; {running} running Job(s) finishing" if running else "")
    elif seen.unavailable:
        phase, message = Phase(previous.get("phase") or Phase.PENDING), f"retrying: {seen.unavailable}"
    else:
        phase = Phase.RUNNING if step and (step.done or (seen.decision and seen.decision.running)) else Phase.PENDING
    fields["attempts"] = _attempts(seen.decision, previous)
    fields["disruptions"] = run_disruptions(seen.decision.disrupted) if seen.decision else _kept_disruptions(previous)
    if phase.finished:
        fields["completed_at"] = previous.get("completedAt") if previous.get("phase") == phase else now

    def condition(kind: str, value: str, reason: str, text: str) -> Condition:
        return _condition(conditions_before, kind, value, reason, text, generation, now)

    if failure:
        succeeded = condition("Succeeded", "False", failure.reason, failure.message)
    elif finished:
        succeeded = condition("Succeeded", "True", "Succeeded", message)
    else:
        succeeded = condition("Succeeded", "Unknown", phase, message)
    refused_text = refusal_message(seen.refused)
    stalled_reason, stalled_text = (failure.reason, failure.message) if failure else ((Reason.UNSAFE_EDIT, refused_text) if seen.refused else ("", ""))
    in_progress = phase in (Phase.PENDING, Phase.RUNNING) and not seen.refused
    waiting = [view.waiting for _, view in (seen.decision.running if seen.decision else []) if view.waiting]
    progress_reason = ("Queued" if waiting[0].queued else waiting[0].reason) if waiting else (seen.unavailable_reason or phase)
    suspended = phase == Phase.SUSPENDED
    return SelfTaughtRunStatus(
        observed_generation=generation,
        started_at=previous.get("startedAt") or now,
        store=seen.store or previous.get("store"),
        report=seen.report,
        serving=seen.serving if seen.decision is not None else _kept_serving(previous),
        store_unreachable_since=seen.unreachable_since,
        ignored_fields=seen.ignored or None,
        tracking=seen.tracking or None,
        phase=phase,
        stage=stage or previous.get("stage"),
        iteration=iteration if iteration is not None else previous.get("iteration"),
        message=message,
        conditions=[
            succeeded,
            condition("Ready", "True" if finished and not seen.refused else "False", "Succeeded" if finished else phase, message),
            condition("Reconciling", "True" if in_progress else "False", progress_reason if in_progress else "Idle", message if in_progress else ""),
            condition("Stalled", "True" if stalled_reason else "False", stalled_reason or "NotStalled", stalled_text),
            condition("Suspended", "True" if suspended else "False", "Suspended" if suspended else "NotSuspended", message if suspended else ""),
            condition(
                "SpecAccepted",
                "False" if (seen.refused or seen.invalid) else "True",
                seen.invalid.reason if seen.invalid else (Reason.UNSAFE_EDIT if seen.refused else "Accepted"),
                seen.invalid.message if seen.invalid else refused_text,
            ),
        ],
        **fields,
    )


def front(views: list[StageView]) -> StageView | None:
    """Of the running stages' views, the one with the most time left (the run waits on it)."""
    return max(views, key=lambda view: (view.eta_seconds is not None, view.eta_seconds or 0), default=None)


def run_progress(view: StageView) -> RunProgress:
    return RunProgress(
        stage=view.stage,
        percent=view.percent,
        done=int(view.done),
        total=int(view.total) if view.total is not None else None,
        unit=view.unit,
        shards_done=view.shards_done,
        shards=view.shards,
        tokens_per_second=view.tokens_per_second,
        reward=view.metrics.get("reward"),
        accuracy=view.metrics.get("accuracy"),
        eta_seconds=view.eta_seconds,
        eta=duration(view.eta_seconds) if view.eta_seconds is not None else None,
        updated_at=_iso(view.updated_at) if view.updated_at is not None else None,
    )


def run_completion(step: Plan, completion: Completion | None) -> RunCompletion:
    """`4/10`, `37%` and the whole run's time left, for the printer columns."""
    if completion is None:
        return RunCompletion(stages=f"{len(step.done)}/{step.total}", progress="100%" if step.finished else None, percent=100.0 if step.finished else None)
    return RunCompletion(
        stages=f"{len(step.done)}/{step.total}",
        percent=completion.percent,
        progress=f"{completion.percent:.0f}%",
        eta_seconds=round(completion.eta_seconds),
        eta=duration(completion.eta_seconds),
    )


def run_estimate(estimate: Estimate) -> RunEstimate:
    """The estimate's totals (its rows stay out of etcd: `selftaught plan` and the report show them)."""
    if estimate.unknown:
        return RunEstimate(gpu=estimate.gpu, message=f"no estimate yet: {estimate.unknown}")
    adaptive = estimate.adaptive
    return RunEstimate(
        gpu=estimate.gpu,
        gpu_hours=round(estimate.gpu_hours, 1),
        remaining_gpu_hours=round(estimate.remaining_gpu_hours, 1),
        hours=round(estimate.hours, 1),
        generated_tokens=int(estimate.generated_tokens),
        judge_tokens_fixed_n=int(adaptive.fixed_tokens) if adaptive else None,
        vote_tokens_all_k=int(estimate.votes.all_k_tokens) if estimate.votes else None,
        measured_stages=estimate.measured_stages,
        reused=[row.label for row in estimate.rows if row.reused],
        saved_gpu_hours=round(estimate.saved_gpu_hours, 1) if any(row.reused for row in estimate.rows) else None,
        message="; ".join([estimate.train_memory.line()] * (estimate.train_memory is not None) + estimate.assumptions)[:1000],
    )


def status_document(status: SelfTaughtRunStatus) -> dict[str, Any]:
    """The status as the API server stores it (camelCase, no nulls)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def status_patch(previous: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `previous` into `document`: a key that is gone is written as
    null, at every depth (a merge patch keeps what it does not mention, so a field of
    `status.serving` that no longer applies would otherwise stay)."""
    patch: dict[str, Any] = {key: None for key in previous if key not in document}
    for key, value in document.items():
        old = previous.get(key)
        patch[key] = status_patch(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return patch


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: str | None) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else 0.0


def _attempts(decision: Decision | None, previous: dict[str, Any]) -> dict[str, StageAttempts]:
    """Per stage: Jobs created, the last failure, the disruptions and the pods' grace period.
    Without a decision (a bad spec, the store unreachable) they carry over: they bound the retries
    and the disruptions, and must never reset."""
    if decision is None:
        return {label: StageAttempts.model_validate(value) for label, value in (previous.get("attempts") or {}).items()}
    stages: dict[str, StageAttempts] = {}
    labels = set(decision.attempts) | set(decision.failures) | set(decision.disrupted_attempts) | set(decision.disrupted)
    for label in sorted(labels):
        last = decision.failures.get(label)
        created = decision.created_at.get(label)
        disrupted = decision.disrupted.get(label, [])
        grace = decision.grace.get(label)
        stages[label] = StageAttempts(
            attempts=decision.attempts.get(label, 0),
            disruptions=len(disrupted),
            disrupted_attempts=decision.disrupted_attempts.get(label) or None,
            lost_gpu_seconds=round(sum(record.gpu_seconds for record in disrupted), 1) if disrupted else None,
            disrupted=[disruption_status(record) for record in disrupted] or None,
            termination_grace_period_seconds=grace.seconds if grace else None,
            grace_period_basis=grace.basis if grace else None,
            created_at=_iso(created) if created else None,
            last_failure=StageFailure(
                attempt=last.attempt, reason=last.failure.reason, message=clip(last.failure.message), at=_iso(last.at),
                permanent=last.failure.permanent, generation=last.generation,
            ) if last else None,
        )  # fmt: skip
    return stages


def disruption_status(record: DisruptionRecord) -> Disruption:
    return Disruption(
        cause=record.cause,
        reason=record.reason,
        message=record.message,
        at=_iso(record.at),
        job=record.attempt,
        node=record.node,
        pods=record.pods,
        shards=record.shards,
        redone=round(record.redone, 1) if record.redone is not None else None,
        unit=record.unit,
        seconds=round(record.seconds, 1),
        gpus=record.gpus,
        gpu_seconds=round(record.gpu_seconds, 1),
        saved=record.saved,
    )


def disruption_record(label: str, item: dict[str, Any]) -> DisruptionRecord | None:
    """A status entry read back (the inverse of `disruption_status`); None for one this version
    cannot read (a cause it does not know)."""
    try:
        return DisruptionRecord(
            stage=label,
            cause=Cause(item.get("cause", "")),
            reason=str(item.get("reason", "")),
            message=str(item.get("message", "")),
            at=_time(item.get("at")),
            attempt=item.get("job"),
            node=item.get("node"),
            pods=list(item.get("pods") or []),
            shards=[int(shard) for shard in item.get("shards") or []],
            unit=item.get("unit"),
            redone=item.get("redone"),
            seconds=float(item.get("seconds", 0.0)),
            gpus=int(item.get("gpus", 0)),
            gpu_seconds=float(item.get("gpuSeconds", 0.0)),
            saved=bool(item.get("saved")),
        )
    except ValueError:
        return None


def run_disruptions(disrupted: dict[str, list[DisruptionRecord]]) -> RunDisruptions | None:
    """Every stage's disruptions in one line: how many, of which causes, what they cost."""
    records = [record for stage in disrupted.values() for record in stage]
    if not records:
        return None
    return RunDisruptions(
        count=len(records),
        gpu_seconds=round(sum(record.gpu_seconds for record in records), 1),
        causes=causes(records),
        message=summary(records),
    )


def _kept_disruptions(previous: dict[str, Any]) -> RunDisruptions | None:
    return RunDisruptions.model_validate(previous["disruptions"]) if previous.get("disruptions") else None


@dataclass
class History:
    """What the status remembers of each stage's attempts (it outlives the Jobs): decide's input."""

    attempts: dict[str, int] = field(default_factory=dict)
    created_at: dict[str, float] = field(default_factory=dict)
    failures: dict[str, FailedAttempt] = field(default_factory=dict)
    disrupted_attempts: dict[str, int] = field(default_factory=dict)
    disrupted: dict[str, list[DisruptionRecord]] = field(default_factory=dict)
    grace: dict[str, Grace] = field(default_factory=dict)


def history(previous: dict[str, Any]) -> History:
    """`status.attempts` read back: the inverse of what `_attempts` writes."""
    remembered = History()
    for label, stage in (previous.get("attempts") or {}).items():
        remembered.attempts[label] = int(stage.get("attempts", 0))
        # an operator before disruptions were counted wrote its disrupted attempts as `disruptions`
        remembered.disrupted_attempts[label] = int(stage.get("disruptedAttempts", stage.get("disruptions", 0) if "disrupted" not in stage else 0))
        remembered.disrupted[label] = [record for item in stage.get("disrupted") or [] if (record := disruption_record(label, item))]
        if stage.get("terminationGracePeriodSeconds") is not None:
            remembered.grace[label] = Grace(int(stage["terminationGracePeriodSeconds"]), str(stage.get("gracePeriodBasis") or ""))
        if stage.get("createdAt"):
            remembered.created_at[label] = _time(stage["createdAt"])
        if last := stage.get("lastFailure"):
            failure = Failure(as_reason(str(last.get("reason", ""))), str(last.get("message", "")), bool(last.get("permanent")))
            remembered.failures[label] = FailedAttempt(int(last.get("attempt", 0)), failure, _time(last.get("at")), int(last.get("generation", 0)))
    return remembered


def is_finished(obj: dict[str, Any]) -> bool:
    """Succeeded or Failed at the current generation. A verdict of the operator's own (a spec it
    could not read, a snapshot, the run's name: class `operator`) is not finished: a newer
    operator (or CRD), deleted data or an edit may heal it, so it is looked at again."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation", 1) or status.get("phase") not in (Phase.SUCCEEDED, Phase.FAILED):
        return False
    succeeded = next((c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {})
    return reason_class(succeeded.get("reason") or "") is not ReasonClass.OPERATOR


def _kept_serving(previous: dict[str, Any]) -> ServingStatus | None:
    """Without a decision (a bad spec, the store unreachable) the server was not looked at: what
    the status said of it stays."""
    return ServingStatus.model_validate(previous["serving"]) if previous.get("serving") else None
