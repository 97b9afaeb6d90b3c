"""Reading a run's progress from its store: which stages and shards are done, and the small
summaries (kept examples, accuracy, checkpoint) that go into the status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selftaught.store import Store
from selftaught.store.layout import StageRef
from selftaught.store.manifest import Manifest, read_manifest

MANIFEST = "_manifest.json"


@dataclass
class Progress:
    manifests: dict[StageRef, Manifest] = field(default_factory=dict)
    shards_done: dict[StageRef, int] = field(default_factory=dict)

    @property
    def done(self) -> frozenset[StageRef]:
        return frozenset(self.manifests)


def _stage_of(prefix: str) -> StageRef | None:
    parts = prefix.split("/")
    try:
        if len(parts) == 1:
            return StageRef(parts[0])  # type: ignore[arg-type]
        if len(parts) == 2 and parts[0].startswith("iter-"):
            return StageRef(parts[1], int(parts[0][5:]))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None
    return None


def scan(store: Store, cache: dict[str, Manifest] | None = None) -> Progress:
    """One listing of the store; manifests are immutable once written, so `cache` (keyed by
    object key) saves re-reading them on every reconcile."""
    cache = {} if cache is None else cache
    progress = Progress()
    for key in store.list(""):
        head, _, name = key.rpartition("/")
        if name == MANIFEST:
            ref = _stage_of(head)
            if ref is None:
                continue
            manifest = cache.get(key) or read_manifest(store, key)
            if manifest is not None:
                cache[key] = manifest
                progress.manifests[ref] = manifest
        elif head.endswith("/_shards"):
            ref = _stage_of(head[: -len("/_shards")])
            if ref is not None:
                progress.shards_done[ref] = progress.shards_done.get(ref, 0) + 1
    return progress


def iteration_summaries(progress: Progress, limit: int = 10) -> list[dict[str, Any]]:
    """Per iteration: tried, kept, keep rate, accuracy, checkpoint; the newest `limit` only, so
    the status stays small however long the run."""
    rows: dict[int, dict[str, Any]] = {}
    for ref, manifest in progress.manifests.items():
        if ref.name not in {"judge", "train", "evaluate"}:
            continue
        row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
        summary = manifest.summary
        if ref.name == "judge":
            row.update(tried=summary.get("tried"), kept=summary.get("kept"), keepRate=summary.get("keepRate"))
        elif ref.name == "train":
            row["checkpoint"] = summary.get("checkpoint")
        else:
            row["accuracy"] = summary.get("accuracy")
            for extra in ("positionConsistent", "majorityVote"):
                if extra in summary:
                    row[extra] = summary[extra]
    return [rows[i] for i in sorted(rows)][-limit:]
