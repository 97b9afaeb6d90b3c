"""Progress objects: how far one running shard (or a training run) is, rewritten every few
seconds by the stage process and read by whoever shows progress (`selftaught run`, `selftaught
status`, the operator). Small, written atomically, and never trusted: a missing or unreadable
one is simply no progress yet."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from selftaught.store.base import StorageUnavailable, Store

Unit = Literal["samples", "steps"]


class SavedState(BaseModel):
    """The newest state of a running shard or training that a restart would continue from: a
    training checkpoint, or the items of a generation shard already written to the store."""

    done: float = Field(description="Steps (or items) the saved state holds: a restart redoes only what came after.")
    at: float = Field(description="Wall-clock time (epoch seconds) it was complete in the store.")
    seconds: float = Field(0.0, description="How long saving it took (writing and uploading), the pause it cost.")
    bytes: int = Field(0, description="What it weighs in the store.")


class ProgressRecord(BaseModel):
    stage: str = Field(description="The stage label, e.g. judge-1.")
    shard: int = 0
    attempt: str | None = None
    unit: Unit = "samples"
    done: float = 0.0
    total: float | None = Field(None, description="None until the shard has read its input.")
    tokens: float = 0.0
    started_at: float = Field(description="Wall-clock time (epoch seconds) the shard started.")
    working_since: float | None = Field(None, description="When its model was loaded and work began; the start when unknown.")
    updated_at: float = Field(description="Wall-clock time of this write.")
    finished: bool = False
    metrics: dict[str, float] = Field(
        default_factory=dict, description="What the stage measures as it goes (a GRPO train stage: reward, accuracy)."
    )
    resumed: float = Field(
        0.0, description="Of `done`, what this attempt continued from instead of doing (a checkpoint's steps, replayed answers): no part of its rate."
    )
    saved: SavedState | None = Field(None, description="The newest state a restart continues from; None: a restart starts over.")

    @property
    def seconds(self) -> float:
        """Seconds of work so far: the rate of work, and so the time left, leaves out the model load."""
        return max(self.updated_at - (self.working_since or self.started_at), 0.0)

    @property
    def rate(self) -> float:
        """Work per second of this attempt's own work: what it continued from is done, not fast."""
        return max(self.done - self.resumed, 0.0) / self.seconds if self.seconds > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        if self.finished:
            return 1.0
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)


def write_progress(store: Store, key: str, record: ProgressRecord) -> None:
    store.write_bytes(key, record.model_dump_json().encode())


def read_progress(store: Store, key: str) -> ProgressRecord | None:
    """The record at `key`; None when it is missing, partial or not a record (progress is a hint:
    it must never stop whoever reads it)."""
    try:
        return ProgressRecord.model_validate(json.loads(store.read_bytes(key)))
    except (StorageUnavailable, ValueError, ValidationError, UnicodeDecodeError):
        return None
