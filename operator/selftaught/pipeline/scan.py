"""The progress scan: one listing of a run's store says which stages and shards are done and where
the progress objects of running stages are; from the manifests it found, the small summaries
(kept examples, accuracy, checkpoint, skipped input records) that go into the status and into
what `selftaught run` and `selftaught status` print (`views/overview.py` words them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selftaught.pipeline.table import ORDER, STAGES, StageRef
from selftaught.store import Store
from selftaught.store.layout import DISRUPTIONS, FAILURES, LOGS, MANIFEST, PROGRESS, REPORT, SHARD_MARKERS, TRACKING
from selftaught.store.manifest import Manifest, read_manifest


@dataclass
class Progress:
    manifests: dict[StageRef, Manifest] = field(default_factory=dict)
    shards_done: dict[StageRef, int] = field(default_factory=dict)
    #: which shards have their marker (by number)
    finished_shards: dict[StageRef, set[int]] = field(default_factory=dict)
    #: the keys of each stage's progress objects (`_progress/NNNNN.json`), read only when shown
    progress_keys: dict[StageRef, list[str]] = field(default_factory=dict)
    #: the keys of each stage's disruption records (`_disruptions/*.json`), read only when shown
    disruption_keys: dict[StageRef, list[str]] = field(default_factory=dict)
    #: the keys of the local runner's failure records of each stage (`_failures/*.json`)
    failure_keys: dict[StageRef, list[str]] = field(default_factory=dict)
    #: the keys of each stage's process logs the local runner kept (`_logs/*.log`)
    log_keys: dict[StageRef, list[str]] = field(default_factory=dict)
    #: whether the run's HTML report is there
    report: bool = False
    #: the keys of the tracking ledger (`tracking/…`: what was logged to MLflow or W&B, what was not)
    tracking_keys: list[str] = field(default_factory=list)
    #: the URL of the store scanned: where its outputs are, wherever it was copied
    root: str = ""

    @property
    def done(self) -> frozenset[StageRef]:
        return frozenset(self.manifests)


def scan(store: Store, cache: dict[str, Manifest] | None = None) -> Progress:
    """One listing of the store; manifests are immutable once written, so `cache` (keyed by
    object key) saves re-reading them on every reconcile."""
    cache = {} if cache is None else cache
    progress = Progress(root=store.url())
    for key in store.list(""):
        head, _, name = key.rpartition("/")
        if key == REPORT:
            progress.report = True
        elif key.startswith(TRACKING):
            progress.tracking_keys.append(key)
        if name == MANIFEST:
            ref = StageRef.from_prefix(head)
            if ref is None:
                continue
            manifest = cache.get(key) or read_manifest(store, key)
            if manifest is not None:
                cache[key] = manifest
                progress.manifests[ref] = manifest
        elif head.endswith(f"/{SHARD_MARKERS}"):
            ref = StageRef.from_prefix(head[: -len(SHARD_MARKERS) - 1])
            if ref is not None:
                progress.shards_done[ref] = progress.shards_done.get(ref, 0) + 1
                if name.removesuffix(".json").isdigit():
                    progress.finished_shards.setdefault(ref, set()).add(int(name.removesuffix(".json")))
        elif head.endswith(f"/{PROGRESS}") and name.endswith(".json"):
            ref = StageRef.from_prefix(head[: -len(PROGRESS) - 1])
            if ref is not None:
                progress.progress_keys.setdefault(ref, []).append(key)
        elif head.endswith(f"/{DISRUPTIONS}") and name.endswith(".json"):
            ref = StageRef.from_prefix(head[: -len(DISRUPTIONS) - 1])
            if ref is not None:
                progress.disruption_keys.setdefault(ref, []).append(key)
        elif head.endswith(f"/{FAILURES}") and name.endswith(".json"):
            ref = StageRef.from_prefix(head[: -len(FAILURES) - 1])
            if ref is not None:
                progress.failure_keys.setdefault(ref, []).append(key)
        elif head.endswith(f"/{LOGS}") and name.endswith(".log"):
            ref = StageRef.from_prefix(head[: -len(LOGS) - 1])
            if ref is not None:
                progress.log_keys.setdefault(ref, []).append(key)
    return progress


def iteration_summaries(progress: Progress, limit: int = 10) -> list[dict[str, Any]]:
    """Per iteration, what its stages report (the table's `reports`: tried, kept, keep rate,
    checkpoint, accuracy, ...); the newest `limit` only, so the status stays small however long
    the run."""
    reporting = {info.name: info.reports for info in STAGES if info.reports}
    rows: dict[int, dict[str, Any]] = {}
    for ref, manifest in progress.manifests.items():
        keys = reporting.get(ref.name)
        if not keys:
            continue
        row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
        for key in keys:
            source, target = (key, key) if isinstance(key, str) else key
            if manifest.summary.get(source) is not None:
                row[target] = manifest.summary[source]
        if isinstance(row.get("checkpoint"), str):
            row["checkpoint"] = located(progress.root, row["checkpoint"])
    return [rows[i] for i in sorted(rows)][-limit:]


def located(root: str, path: str) -> str:
    """A path a manifest holds (a checkpoint), as a URL: relative to the store at `root` that
    holds the manifest — so a copy of the store points at its own copy — or, as stores written
    before checkpoints were store-relative hold them, the absolute URL it is."""
    if not root or "://" in path or path.startswith("/"):
        return path
    return f"{root.rstrip('/')}/{path}"


def stages_with_skips(progress: Progress) -> list[tuple[StageRef, int]]:
    """(stage, records it skipped) for the finished stages that skipped any, in run order."""
    rows = []
    for ref in sorted(progress.manifests, key=lambda r: (r.iteration, ORDER[r.name])):
        manifest = progress.manifests[ref]
        count = max(int(manifest.counts.get("skipped_records", 0)), len(manifest.skipped))
        if count:
            rows.append((ref, count))
    return rows


def skipped_counts(progress: Progress) -> dict[str, int]:
    """Stage label -> input records it skipped (bad lines, records without the field, prompts too
    long for the model, under `onBadRecord: skip`): a run that succeeded on part of its data says so
    in its status. Stages that skipped nothing are left out."""
    return {ref.label: count for ref, count in stages_with_skips(progress)}
