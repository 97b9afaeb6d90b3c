"""Failure records: a stage attempt of the local runner that failed, its reason and message and
where its log is, `<stage>/_failures/local-<ms>.json`. The operator keeps the same facts in the
run's status (`status.attempts`); a local run has no status object, so the runner leaves them in
the store, where `selftaught status` finds them from any shell. Like disruption records they are
hints for people: a missing or unreadable one is no failure shown, never an error.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field, ValidationError

from selftaught.store.base import StorageUnavailable, Store


class FailureRecord(BaseModel):
    stage: str = Field(description="The stage label, e.g. categorize or judge-1.")
    reason: str = Field(description="The stage's own reason (errors.Reason), e.g. InvalidInput.")
    message: str = ""
    permanent: bool = False
    at: float = Field(description="When it failed (epoch seconds).")
    executor: str = "local"
    shard: int | None = None
    log: str | None = Field(None, description="The failed process's log, a key of the run's store.")


def write_failure(store: Store, key: str, record: FailureRecord) -> None:
    store.write_bytes(key, record.model_dump_json(exclude_none=True).encode())


def read_failure(store: Store, key: str) -> FailureRecord | None:
    """The record at `key`; None when it is missing or not a record (a hint, never an error)."""
    try:
        return FailureRecord.model_validate(json.loads(store.read_bytes(key)))
    except (StorageUnavailable, ValueError, ValidationError, UnicodeDecodeError):
        return None
