"""Reuse across runs (`spec.reuse`): a stage whose key (`pipeline/lineage.py`) an earlier run
already published is linked into this run instead of run again.

The index is a folder of small objects, one per stage key, `<index>/<stage>/<key>.json`, naming the
run store that published it; written with a conditional create (the first run to publish a key
wins, nobody overwrites), read through that run's manifest. Taking a stage over copies every
output its manifest lists, checked against the manifest's figures (`store/copying.py`: hard links
in a folder, S3's server-side copy), to the same keys in this run's store, then publishes the
manifest — with `reused` saying from where — by the same conditional create as a stage does.
So the run's layout is the one a stage would have written: everything downstream, `resume`,
`selftaught get` and the report read it unchanged. Both executors call `adopt` for a ready stage
before they start it, and `record` for a stage they saw finish: one implementation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.errors import SelftaughtError
from selftaught.pipeline.identity import identities
from selftaught.pipeline.lineage import stage_keys
from selftaught.pipeline.table import StageRef
from selftaught.store import Store, open_uri
from selftaught.store.copying import copy_object
from selftaught.store.manifest import Manifest, create_manifest, read_manifest

#: the index's folder under `storage.uri` when `reuse.index` names none (beside the namespaces)
INDEX_FOLDER = "_reuse"


def index_uri(spec: SelfTaughtRunSpec) -> str:
    return spec.reuse.index or f"{spec.storage.uri.rstrip('/')}/{INDEX_FOLDER}"


@dataclass
class Lineage:
    """A run's stage keys and the index it reuses from and records into."""

    keys: dict[StageRef, str]
    index: Store
    #: stages recorded by this process already (the operator passes often; the index never changes)
    recorded: set[StageRef] = field(default_factory=set)


def open_lineage(spec: SelfTaughtRunSpec) -> Lineage:
    """The run's stage keys and its index, whether or not `spec.reuse.enabled` (reads the data's
    and models' identities: a listing each, small files hashed)."""
    return Lineage(stage_keys(spec, identities(spec)), open_uri(index_uri(spec), spec.storage))


def lineage_of(spec: SelfTaughtRunSpec) -> Lineage | None:
    """The run's lineage when `spec.reuse.enabled`, else None."""
    return open_lineage(spec) if spec.reuse.enabled else None


def entry_key(ref: StageRef, key: str) -> str:
    return f"{ref.label}/{key}.json"


@dataclass(frozen=True)
class Found:
    """An earlier run's published stage with this run's key."""

    store: Store
    manifest: Manifest


def find(lineage: Lineage, ref: StageRef, run_store: Store, spec: SelfTaughtRunSpec) -> Found | None:
    """The earlier run that published `ref`'s key, with its manifest; None when no run did, the
    entry names this very run, or that run's stage is gone (its data deleted)."""
    key = lineage.keys.get(ref)
    if key is None:
        return None
    try:
        entry = json.loads(lineage.index.read_bytes(entry_key(ref, key)))
    except (SelftaughtError, ValueError):
        return None
    source_url = str(entry.get("store", ""))
    if not source_url or source_url.rstrip("/") == run_store.url().rstrip("/"):
        return None
    source = open_uri(source_url, spec.storage)
    manifest = read_manifest(source, ref.manifest_key)
    return Found(source, manifest) if manifest is not None else None


@dataclass(frozen=True)
class Adopted:
    ref: StageRef
    source: str
    manifest: Manifest
    #: how the outputs came over: "linked" (hard links), "copied in the store" (S3), "copied"
    how: str


def adopt(lineage: Lineage, ref: StageRef, run_store: Store, spec: SelfTaughtRunSpec) -> Adopted | None:
    """Take `ref` over from the earlier run that published its key: copy its outputs, checked,
    then publish its manifest here. None when there is nothing to reuse; a source whose outputs
    are not what its manifest promises raises `StoreCorrupt` naming them (the run then computes the
    stage itself: `adopt_or_none`)."""
    found = find(lineage, ref, run_store, spec)
    if found is None:
        return None
    started = time.monotonic()
    ways = set()
    for key in found.manifest.outputs:
        ways.add(copy_object(found.store, key, run_store, key))
    manifest = found.manifest.model_copy(
        update={"reused": {"from": found.store.url(), "key": lineage.keys[ref], "seconds": round(time.monotonic() - started, 3)}}
    )
    if not create_manifest(run_store, ref.manifest_key, manifest):  # another executor of this run won: its manifest stands
        manifest = read_manifest(run_store, ref.manifest_key) or manifest
    lineage.recorded.add(ref)
    return Adopted(ref, found.store.url(), manifest, " and ".join(sorted(ways)) or "nothing to copy")


def adopt_or_none(lineage: Lineage, ref: StageRef, run_store: Store, spec: SelfTaughtRunSpec, warn) -> Adopted | None:
    """`adopt`, with a source that cannot be used (damaged, unreachable) said through `warn` and
    the stage run here instead: reuse is a saving, never a reason for a run to fail."""
    try:
        return adopt(lineage, ref, run_store, spec)
    except SelftaughtError as error:
        warn(f"{ref.label}: not reused ({error}); running it")
        return None


def record(lineage: Lineage, ref: StageRef, run_store: Store, manifest: Manifest | None) -> bool:
    """Put this run's finished `ref` in the index under its key, unless a run is there already
    (the first to publish a key keeps it) or the stage was itself reused. True when written."""
    if ref in lineage.recorded or manifest is None or ref not in lineage.keys:
        return False
    lineage.recorded.add(ref)
    if manifest.reused is not None:
        return False
    entry = {"key": lineage.keys[ref], "stage": ref.label, "store": run_store.url(), "recordedAt": time.time()}
    return lineage.index.create_bytes(entry_key(ref, lineage.keys[ref]), json.dumps(entry, indent=2).encode())


def record_all(lineage: Lineage, manifests: dict[StageRef, Manifest], run_store: Store) -> None:
    for ref, manifest in manifests.items():
        record(lineage, ref, run_store, manifest)


def reused_stages(manifests: Mapping[StageRef, Manifest]) -> list[str]:
    """The labels of the finished stages that were linked from an earlier run (their manifests say so)."""
    return [ref.label for ref in sorted(manifests) if manifests[ref].reused is not None]


def planned_reuse(lineage: Lineage, spec: SelfTaughtRunSpec, manifests: Mapping[StageRef, Manifest], run_store: Store) -> list[str]:
    """The labels of the stages this run reuses: those already linked, and those not yet finished
    whose key an earlier run published (one index read each: what the plan shows)."""
    pending = [ref for ref in lineage.keys if ref not in manifests]
    return reused_stages(manifests) + [ref.label for ref in pending if find(lineage, ref, run_store, spec) is not None]
