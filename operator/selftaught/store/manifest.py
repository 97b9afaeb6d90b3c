"""Done-markers: a small JSON written last, after every output it describes.

A stage (or shard) is done exactly when its manifest exists, so the local runner and the
operator agree on progress by reading the store, and a killed stage is simply run again. A marker
read from the store hands out its outputs' keys as `Published` keys, each carrying what the
marker promises of it (records, bytes, sha256), so whoever reads an output through its marker
verifies it (`store/integrity.py`).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from selftaught.errors import StoreCorrupt
from selftaught.store.base import ObjectNotFound, Store
from selftaught.store.integrity import Promise, Published, promise_of
from selftaught.store.layout import MANIFEST, manifest_key, output_key


class Manifest(BaseModel):
    stage: str
    iteration: int = 0
    shard: int | None = None
    shards: int = 1
    attempt: str | None = Field(default=None, description="The stage attempt whose outputs this marker publishes.")
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
    reused: dict[str, Any] | None = Field(
        default=None,
        description="When the outputs were linked from an earlier run with the same stage key (spec.reuse): "
        "`from` (that run's store), `key` (the stage key) and `seconds` (what linking took); `seconds` above stays the "
        "original stage's, so what the stage cost is still known.",
    )


def write_manifest(store: Store, key: str, manifest: Manifest) -> None:
    store.write_text(key, manifest.model_dump_json(indent=2))


def create_manifest(store: Store, key: str, manifest: Manifest) -> bool:
    """Publish `manifest` only if no marker exists yet: False when another attempt won."""
    return store.create_bytes(key, manifest.model_dump_json(indent=2).encode())


def read_manifest(store: Store, key: str) -> Manifest | None:
    """The marker at `key`, None if there is none; a marker that is not one (a truncated copy, a
    hand edit) is named, since every reader would otherwise fail on it the same way."""
    try:
        manifest = Manifest.model_validate_json(store.read_bytes(key))
    except ObjectNotFound:
        return None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'document'}: {e['msg']}" for e in error.errors()[:3])
        raise StoreCorrupt(f"{store.url(key)}: not a valid stage manifest ({problems}); delete it to run that stage again") from None
    marker = store.url(key)
    manifest.outputs = {Published(name, Promise.of(marker, figures)): figures for name, figures in manifest.outputs.items()}
    return manifest


def published_key(store: Store, prefix: str, name: str) -> Published:
    """The key of output `name` of the finished stage at `prefix` (in its winning attempt), with
    what its marker promises of it (of a folder, such as a checkpoint, nothing: its files are
    verified by whoever fetches them, `engines/models.py`)."""
    manifest = read_manifest(store, manifest_key(prefix))
    if manifest is None:
        raise ObjectNotFound(f"{store.url(manifest_key(prefix))}: the stage that writes {name} has not finished")
    key = output_key(prefix, manifest.attempt, name)
    return next((found for found in manifest.outputs if found == key), Published(key, None))


def read_published(store: Store, key: str) -> bytes:
    """A small published object whole (an evaluation's metrics), checked against its promise."""
    data = store.read_bytes(key)
    if (promise := promise_of(key)) is not None:
        promise.check_size(store.url(key), len(data))
        promise.check_digest(store.url(key), hashlib.sha256(data).hexdigest())
    return data


def folder_promises(stage: Store, attempt: str, name: str) -> dict[str, Promise]:
    """What the marker of the stage folder `stage` promises of each file of the output folder
    `name` of `attempt` (a checkpoint), by the file's path inside that folder; empty when its marker
    publishes no such folder (a model of one's own, an attempt that lost, a marker without figures)."""
    manifest = read_manifest(stage, MANIFEST)
    if manifest is None or manifest.attempt != attempt:
        return {}
    inside = f"{attempt}/{name}/"
    promises = {}
    for key in manifest.outputs:
        head, found, path = key.partition(inside)
        if found and (not head or head.endswith("/")) and (promise := promise_of(key)) is not None:
            promises[path] = promise
    return promises
