"""A run's own folder in the store, and the spec it runs with.

The first executor to see a run records its spec (`run.json`); from then on an edit is checked
against that record with one policy for both executors: an edit applies when the first stage that
depends on the field (`api/changes.py`) has no output yet in the store — so a run whose stage
failed with nothing produced can be fixed by editing its spec — and fields that only say how or
when stages run apply at any time; every other change is refused and the run goes on with what
it started with. The local runner stops with the refusal; the operator shows it as a condition.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from selftaught.api.changes import DependsOn, Produced, merge_safe, unsafe_changes
from selftaught.api.load import format_validation_error
from selftaught.api.spec import SelfTaughtRun, SelfTaughtRunSpec
from selftaught.errors import InvalidSpec, Reason
from selftaught.pipeline.launch import stage_document
from selftaught.pipeline.planner import Node, stage_graph
from selftaught.pipeline.scan import Progress, scan
from selftaught.pipeline.table import StageRef
from selftaught.store import Store, open_uri
from selftaught.store.layout import RUN_SNAPSHOT


def open_run_store(run: SelfTaughtRun) -> Store:
    """`<storage.uri>/<namespace>/<name>/`: runs never share a folder."""
    root = open_uri(run.spec.storage.uri, run.spec.storage)
    return root.child(f"{run.metadata.namespace}/{run.metadata.name}")


class SnapshotUnreadable(InvalidSpec):
    """The run's recorded spec cannot be read: not JSON (a damaged file), or written by a newer
    selftaught. The message names the object."""

    reason = Reason.SNAPSHOT_UNREADABLE


@dataclass(frozen=True)
class Acceptance:
    spec: SelfTaughtRunSpec  #: what the run executes: the recorded spec plus any safe edits
    refused: list[str] = field(default_factory=list)  #: fields whose edit was refused
    #: the uid of an earlier run of the same name whose data this folder holds (a re-created run)
    earlier_uid: str | None = None

    @property
    def refusal(self) -> str:
        return refusal_message(self.refused)


def _read_snapshot(store: Store) -> dict[str, Any]:
    """The recorded run document; one that is not JSON, or has no spec, is named, not a traceback."""
    key = store.url(RUN_SNAPSHOT)
    try:
        snapshot = json.loads(store.read_bytes(RUN_SNAPSHOT))
    except ValueError as error:  # not JSON, not UTF-8
        raise SnapshotUnreadable(
            f"{key} is not the JSON document selftaught writes ({error}): restore it, or delete it to have the run record "
            "the spec it is given now (its finished stages are kept)"
        ) from None
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("spec"), dict):
        raise SnapshotUnreadable(
            f"{key} holds no run spec: restore it, or delete it to have the run record the spec it is given now "
            "(its finished stages are kept)"
        )
    return snapshot


def has_output(spec: SelfTaughtRunSpec, progress: Progress, busy: Collection[StageRef] = ()) -> Produced:
    """Whether the stage a field depends on has output that the field's edit would contradict: a
    finished stage, a finished shard (unless only the reduce reads the field) or a running attempt,
    of that stage or of a stage that needs it (in a consistent store, the latter implies the former)."""
    finished = set(progress.manifests) | set(busy)
    begun = finished | {ref for ref, count in progress.shards_done.items() if count}
    nodes = stage_graph(spec)

    def produced(depends: DependsOn) -> bool:
        if depends.after_iteration is not None:
            return any(ref.iteration > depends.after_iteration for ref in begun)
        own = finished if depends.reduce_only else begun
        if any(ref.name == depends.stage for ref in own):
            return True
        return any(ref in begun for ref in _needing(nodes, depends.stage))

    return produced


def _needing(nodes: list[Node], name: str | None) -> set[StageRef]:
    """The stages that need a stage called `name`, directly or not."""
    found: set[StageRef] = set()
    for node in nodes:  # in execution order: a stage's needs come before it
        if any(need.name == name or need in found for need in node.needs):
            found.add(node.ref)
    return found


def refusal_message(refused: list[str]) -> str:
    """One sentence for the user, or "" when nothing was refused."""
    if not refused:
        return ""
    return (
        "these fields cannot change after the run started (the stages that depend on them have output) and keep "
        "their accepted values: "
        + ", ".join(refused)
        + " (use a new metadata.name for a new run)"
    )


def accept(store: Store, run: SelfTaughtRun, progress: Progress | None = None, busy: Collection[StageRef] = ()) -> Acceptance:
    """Record the spec on the run's first start; afterwards apply the edits whose stages have no
    output yet (`api/changes.py`), refuse the rest. `progress` is the store's (scanned here when
    not given); `busy` the stages running now with the recorded spec (the operator's Jobs)."""
    if not store.exists(RUN_SNAPSHOT):
        store.write_text(RUN_SNAPSHOT, stage_document(run))
        return Acceptance(run.spec)
    snapshot = _read_snapshot(store)
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
    if earlier is None and run.spec == accepted:  # the common case, on every pass: nothing edited
        return Acceptance(accepted)
    produced = has_output(accepted, scan(store) if progress is None else progress, busy)
    refused = unsafe_changes(accepted, run.spec, produced)
    if refused and earlier:  # a new object under an earlier run's name: leave that run's record alone
        return Acceptance(accepted, refused, earlier)
    effective = merge_safe(accepted, run.spec, produced) if refused else run.spec
    if effective != accepted or earlier:
        store.write_text(RUN_SNAPSHOT, stage_document(run.model_copy(update={"spec": effective})))
    return Acceptance(effective, refused)
