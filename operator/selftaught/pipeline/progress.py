"""Reading a run's progress from its store: which stages and shards are done, and the small
summaries (kept examples, accuracy, checkpoint) that go into the status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selftaught.pipeline.table import STAGES, StageRef
from selftaught.store import Store
from selftaught.store.layout import MANIFEST, SHARD_MARKERS
from selftaught.store.manifest import Manifest, read_manifest


@dataclass
class Progress:
    manifests: dict[StageRef, Manifest] = field(default_factory=dict)
    shards_done: dict[StageRef, int] = field(default_factory=dict)

    @property
    def done(self) -> frozenset[StageRef]:
        return frozenset(self.manifests)


def scan(store: Store, cache: dict[str, Manifest] | None = None) -> Progress:
    """One listing of the store; manifests are immutable once written, so `cache` (keyed by
    object key) saves re-reading them on every reconcile."""
    cache = {} if cache is None else cache
    progress = Progress()
    for key in store.list(""):
        head, _, name = key.rpartition("/")
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
        row.update({key: manifest.summary[key] for key in keys if manifest.summary.get(key) is not None})
    return [rows[i] for i in sorted(rows)][-limit:]
