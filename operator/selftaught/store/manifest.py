"""Done-markers: a small JSON written last, after every output it describes.

A stage (or shard) is done exactly when its manifest exists, so the local runner and the
operator agree on progress by reading the store, and a killed stage is simply run again.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, Field

from selftaught.store.base import ObjectNotFound, Store


class Manifest(BaseModel):
    stage: str
    iteration: int = 0
    shard: int | None = None
    shards: int = 1
    counts: dict[str, float] = Field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seconds: float = 0.0
    finished_at: float = Field(default_factory=time.time)
    summary: dict[str, Any] = Field(
        default_factory=dict, description="A few numbers worth showing in the run's status and events."
    )
    skipped: list[str] = Field(
        default_factory=list, description="The first few bad input records that were skipped, and why (onBadRecord: skip)."
    )


def write_manifest(store: Store, key: str, manifest: Manifest) -> None:
    store.write_text(key, manifest.model_dump_json(indent=2))


def read_manifest(store: Store, key: str) -> Manifest | None:
    try:
        return Manifest.model_validate(json.loads(store.read_bytes(key)))
    except ObjectNotFound:
        return None
