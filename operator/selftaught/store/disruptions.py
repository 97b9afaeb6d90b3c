"""Disruption records: a stage's process stopped by something outside the run (a spot node
reclaimed or lost, a drain, a preemption, Kueue, a stopped `selftaught run`), why, and the work it
cost. Both executors write the same record, `<stage>/_disruptions/<name>.json` (the operator names
it after the first pod it stopped, the local runner `local-<ms>-<shard>`), so `selftaught status`
shows a run's disruptions wherever it ran.

The cost is the work done again: from the newest saved state (a training checkpoint, the items a
generation shard already wrote) to the last progress the stage published, in seconds, GPU-seconds
and steps or samples. Like progress objects, records are hints for people: a missing or unreadable
one is no disruption shown, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from selftaught.store.base import StorageUnavailable, Store
from selftaught.store.progress import ProgressRecord, Unit


class Cause(StrEnum):
    """Why a stage's process was stopped from outside, as a person would put it (the cluster's own
    word stays in the record's `reason`)."""

    NODE_LOST = "NodeLost"  # the node went without a graceful shutdown: nothing after the last save survives
    NODE_SHUTDOWN = "NodeShutdown"  # the kubelet stopped the pod: a graceful node shutdown (a spot reclaim notice)
    EVICTION = "Eviction"  # the Eviction API (a drain, the cluster autoscaler, Karpenter) or node-pressure eviction
    PREEMPTION = "Preemption"  # the scheduler made room for a pod of higher priority
    KUEUE_PREEMPTION = "KueuePreemption"  # Kueue evicted the Job's workload (preemption, a stopped queue): the Job was suspended
    STOPPED = "Stopped"  # asked to stop (SIGTERM) with no word from the cluster why: a deleted pod, a stopped `selftaught run`


class DisruptionRecord(BaseModel):
    stage: str = Field(description="The stage label, e.g. train-2.")
    cause: Cause
    reason: str = Field("", description="What the cluster said: the pod's DisruptionTarget reason, Kueue's, or the stage's own (Disrupted).")
    message: str = ""
    at: float = Field(description="When it was disrupted (epoch seconds).")
    executor: Literal["operator", "local"] = "operator"
    attempt: str | None = Field(None, description="The stage's Job (operator).")
    node: str | None = None
    pods: list[str] = Field(default_factory=list, description="The pods it stopped (operator): one disruption may stop several.")
    shards: list[int] = Field(default_factory=list)
    unit: Unit | None = None
    redone: float | None = Field(None, description="Steps or samples done again (done - saved.done); None when unknown.")
    seconds: float = Field(0.0, description="Wall-clock work lost: since the newest saved state, else since work began.")
    gpus: int = 0
    gpu_seconds: float = 0.0
    saved: bool = Field(False, description="Whether a saved state bounded the loss.")


@dataclass(frozen=True)
class LostWork:
    """What a stopped process throws away: `seconds` of work since its newest saved state (or
    since it began), `redone` steps or samples to do again (None: unknown)."""

    seconds: float
    unit: Unit | None = None
    redone: float | None = None
    saved: bool = False

    def costs(self, gpus: int) -> dict[str, object]:
        """A `DisruptionRecord`'s cost fields for a process on `gpus` GPUs (both executors write them)."""
        return {"unit": self.unit, "redone": self.redone, "seconds": self.seconds, "gpus": gpus, "gpu_seconds": self.seconds * gpus, "saved": self.saved}


def lost_work(record: ProgressRecord | None, *, began_at: float | None = None, stopped_at: float | None = None) -> LostWork:
    """The work a disruption cost, from the stopped process's progress `record`: the last progress
    it published minus its newest saved state (else the moment its work began). Without a record
    (it stopped before publishing any), the time from `began_at` to `stopped_at`, load included.
    A record that started after `stopped_at` is its successor's (it overwrote the stopped one's):
    it still tells the saved state the successor continued from, but not how far the stopped one
    got, so the steps are unknown and the seconds run to `stopped_at`."""
    if record is None:
        seconds = stopped_at - began_at if began_at is not None and stopped_at is not None else 0.0
        return LostWork(max(seconds, 0.0))
    saved = record.saved
    if stopped_at is not None and record.started_at > stopped_at:
        start = saved.at if saved is not None else began_at
        seconds = stopped_at - start if start is not None else 0.0
        return LostWork(max(seconds, 0.0), record.unit, None, saved is not None)
    start = saved.at if saved is not None else (record.working_since or record.started_at)
    redone = record.done - (saved.done if saved is not None else 0.0)
    return LostWork(max(record.updated_at - start, 0.0), record.unit, max(redone, 0.0), saved is not None)


def causes(records: Iterable[DisruptionRecord]) -> dict[str, int]:
    found: dict[str, int] = {}
    for record in records:
        found[record.cause] = found.get(record.cause, 0) + 1
    return found


def causes_text(records: Iterable[DisruptionRecord]) -> str:
    """`2 NodeLost, 1 Eviction`: the most frequent first."""
    return ", ".join(f"{count} {cause}" for cause, count in sorted(causes(records).items(), key=lambda item: (-item[1], item[0])))


def gpu_time(seconds: float) -> str:
    """`16 GPU-seconds`, `2.4 GPU-hours`."""
    return f"{seconds:,.0f} GPU-seconds" if seconds < 3600 else f"{seconds / 3600:,.1f} GPU-hours"


def summary(records: list[DisruptionRecord]) -> str:
    """`2 disruptions (1 Eviction, 1 NodeLost): 16 GPU-seconds of work redone`."""
    redone = gpu_time(sum(record.gpu_seconds for record in records))
    return f"{len(records)} disruption{'' if len(records) == 1 else 's'} ({causes_text(records)}): {redone} of work redone"


def write_disruption(store: Store, key: str, record: DisruptionRecord) -> None:
    store.write_bytes(key, record.model_dump_json(exclude_none=True).encode())


def read_disruption(store: Store, key: str) -> DisruptionRecord | None:
    """The record at `key`; None when it is missing or not a record (a hint, never an error)."""
    try:
        return DisruptionRecord.model_validate(json.loads(store.read_bytes(key)))
    except (StorageUnavailable, ValueError, ValidationError, UnicodeDecodeError):
        return None
