"""The run's status from what the operator observed (pure).

Conditions follow the API conventions and are read by GitOps tools: `Succeeded` (Unknown →
True/False) for the bounded run, `Ready` for Argo CD/Flux, kstatus' `Reconciling` and `Stalled`,
plus `Suspended` and `SpecAccepted`. `phase`, `stage` and `iteration` are derived, for printer
columns. A condition's lastTransitionTime moves only when its status does, so an unchanged run
produces an unchanged status and no write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selftaught.controller.decide import Decision
from selftaught.controller.planner import Plan
from selftaught.controller.progress import Progress, iteration_summaries

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
    invalid: str | None = None  # why the spec cannot be used at all
    failure: tuple[str, str] | None = None  # a terminal failure found outside `decision`
    unavailable: str | None = None  # the store or the API refuses us right now; retrying


def _condition(previous: list[dict[str, Any]], kind: str, status: str, reason: str, message: str, generation: int, now: str) -> dict[str, Any]:
    old = next((c for c in previous if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1000],
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
        "observedGeneration": generation,
    }


def _progress_message(seen: Observation) -> tuple[str | None, int | None, str]:
    """(stage, iteration, message) of the front of the run."""
    step, progress, decision = seen.plan, seen.progress, seen.decision
    assert step is not None and progress is not None
    current = step.current
    if current is None:
        last = step.done[-1] if step.done else None
        return (last.label if last else None), (last.iteration if last else None), "all stages done"
    parts = []
    for ref, view in decision.running if decision else []:
        done = progress.shards_done.get(ref, 0)
        shards = seen.shards if ref.sharded else 1
        retry = f", retry {view.attempt}" if view.attempt else ""
        parts.append(f"{ref.label} running ({done}/{shards} shards{retry})" if ref.sharded else f"{ref.label} running{retry}")
    for ref, wait in decision.backoff if decision else []:
        parts.append(f"{ref.label} failed, retrying in {int(wait)}s")
    if not parts:
        parts.append(f"{current.label} next")
    return current.label, current.iteration, "; ".join(parts)


def build_status(seen: Observation) -> dict[str, Any]:
    previous = seen.previous or {}
    conditions_before = previous.get("conditions") or []
    generation, now = seen.generation, seen.now
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "startedAt": previous.get("startedAt") or now,
        "store": seen.store or previous.get("store"),
    }
    failure = seen.failure or (seen.decision.failure if seen.decision else None)
    if seen.invalid:
        failure = ("InvalidSpec", seen.invalid)
    stage = iteration = None
    if seen.plan is not None and seen.progress is not None:
        stage, iteration, message = _progress_message(seen)
        status["stagesDone"], status["stagesTotal"] = len(seen.plan.done), seen.plan.total
        status["iterations"] = [_iteration(row) for row in iteration_summaries(seen.progress)]
        accuracies = [row["accuracy"] for row in status["iterations"] if row.get("accuracy") is not None]
        status["latestAccuracy"] = accuracies[-1] if accuracies else None
        status["active"] = [
            {
                "stage": ref.label,
                "shardsDone": seen.progress.shards_done.get(ref, 0),
                "shards": seen.shards if ref.sharded else 1,
                "attempt": view.attempt,
                "job": view.name,
            }
            for ref, view in (seen.decision.running if seen.decision else [])
        ]
        status["retries"] = dict(seen.decision.retries) if seen.decision else {}
    else:
        message = previous.get("message") or ""
    finished = seen.plan is not None and seen.plan.finished and not failure
    if failure:
        phase, message = "Failed", f"{failure[0]}: {failure[1]}"
    elif finished:
        phase = "Succeeded"
        accuracy = status.get("latestAccuracy")
        message = f"{seen.plan.total} stages done" + (f"; latest accuracy {accuracy:.3f}" if accuracy is not None else "")
    elif seen.suspended:
        phase = "Suspended"
        running = len(seen.decision.running) if seen.decision else 0
        message = "suspended" + (f"; {running} running Job(s) finishing" if running else "")
    elif seen.unavailable:
        phase, message = previous.get("phase") or "Pending", f"retrying: {seen.unavailable}"
    else:
        phase = "Running" if seen.plan and (seen.plan.done or (seen.decision and seen.decision.running)) else "Pending"
    if phase in ("Succeeded", "Failed"):
        status["completedAt"] = previous.get("completedAt") if previous.get("phase") == phase else now
    status.update(phase=phase, stage=stage or previous.get("stage"), iteration=iteration if iteration is not None else previous.get("iteration"), message=message)

    def condition(kind: str, value: str, reason: str, text: str) -> dict[str, Any]:
        return _condition(conditions_before, kind, value, reason, text, generation, now)

    if failure:
        succeeded = condition("Succeeded", "False", failure[0], failure[1])
    elif finished:
        succeeded = condition("Succeeded", "True", "Succeeded", message)
    else:
        succeeded = condition("Succeeded", "Unknown", phase, message)
    refused_text = (
        "these fields cannot change after the run started and keep their accepted values: " + ", ".join(seen.refused)
        if seen.refused
        else ""
    )
    stalled_reason, stalled_text = (failure[0], failure[1]) if failure else (("UnsafeEdit", refused_text) if seen.refused else ("", ""))
    in_progress = phase in ("Pending", "Running") and not seen.refused
    status["conditions"] = [
        succeeded,
        condition("Ready", "True" if finished and not seen.refused else "False", "Succeeded" if finished else phase, message),
        condition("Reconciling", "True" if in_progress else "False", phase if in_progress else "Idle", message if in_progress else ""),
        condition("Stalled", "True" if stalled_reason else "False", stalled_reason or "NotStalled", stalled_text),
        condition("Suspended", "True" if phase == "Suspended" else "False", "Suspended" if phase == "Suspended" else "NotSuspended", message if phase == "Suspended" else ""),
        condition(
            "SpecAccepted",
            "False" if (seen.refused or seen.invalid) else "True",
            "InvalidSpec" if seen.invalid else ("UnsafeEdit" if seen.refused else "Accepted"),
            seen.invalid or refused_text,
        ),
    ]
    return {k: v for k, v in status.items() if v is not None}


def _iteration(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}
