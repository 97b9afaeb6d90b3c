"""A run's own folder in the store, and the spec it runs with.

The first executor to see a run records its spec (`run.json`); from then on an edit is checked
against that record with one policy for both executors: safe fields (how or when the remaining
stages run) apply, every other change is refused and the run goes on with what it started with.
The local runner stops with the refusal; the operator shows it as a condition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from selftaught.api.changes import merge_safe, unsafe_changes
from selftaught.api.load import format_validation_error
from selftaught.api.spec import SelfTaughtRun, SelfTaughtRunSpec
from selftaught.errors import InvalidSpec
from selftaught.pipeline.launch import stage_document
from selftaught.store import Store, open_store
from selftaught.store.layout import RUN_SNAPSHOT


def open_run_store(run: SelfTaughtRun) -> Store:
    """`<storage.uri>/<namespace>/<name>/`: runs never share a folder."""
    storage = run.spec.storage
    root = open_store(storage.uri, endpoint=storage.endpoint, region=storage.region)
    return root.child(f"{run.metadata.namespace}/{run.metadata.name}")


class SnapshotUnreadable(InvalidSpec):
    """The run's recorded spec cannot be read by this version (written by a newer selftaught)."""

    reason = "SnapshotUnreadable"


@dataclass(frozen=True)
class Acceptance:
    spec: SelfTaughtRunSpec  #: what the run executes: the recorded spec plus any safe edits
    refused: list[str] = field(default_factory=list)  #: fields whose edit was refused
    #: the uid of an earlier run of the same name whose data this folder holds (a re-created run)
    earlier_uid: str | None = None

    @property
    def refusal(self) -> str:
        return refusal_message(self.refused)


def refusal_message(refused: list[str]) -> str:
    """One sentence for the user, or "" when nothing was refused."""
    if not refused:
        return ""
    return (
        "these fields cannot change after the run started and keep their accepted values: "
        + ", ".join(refused)
        + " (use a new metadata.name for a new run)"
    )


def accept(store: Store, run: SelfTaughtRun) -> Acceptance:
    """Record the spec on the run's first start; afterwards apply safe edits, refuse the rest."""
    if not store.exists(RUN_SNAPSHOT):
        store.write_text(RUN_SNAPSHOT, stage_document(run))
        return Acceptance(run.spec)
    snapshot = json.loads(store.read_text(RUN_SNAPSHOT))
    try:
        accepted = SelfTaughtRunSpec.model_validate(snapshot["spec"])
    except ValidationError as error:
        raise SnapshotUnreadable(
            f"{store.url(RUN_SNAPSHOT)}: this version of selftaught cannot read the spec the run started with "
            f"(written by a newer version?): {format_validation_error(error, 'spec.')}; upgrade the operator, or "
            "use a new metadata.name for a new run"
        ) from None
    recorded_uid = (snapshot.get("metadata") or {}).get("uid")
    earlier = recorded_uid if recorded_uid and run.metadata.uid and recorded_uid != run.metadata.uid else None
    refused = unsafe_changes(accepted, run.spec)
    if refused and earlier:  # a new object under an earlier run's name: leave that run's record alone
        return Acceptance(accepted, refused, earlier)
    effective = merge_safe(accepted, run.spec) if refused else run.spec
    if effective != accepted or earlier:
        store.write_text(RUN_SNAPSHOT, stage_document(run.model_copy(update={"spec": effective})))
    return Acceptance(effective, refused)
