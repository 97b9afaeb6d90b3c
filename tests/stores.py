"""Seeding a run's store in tests: the outputs of a stage that finished, as later stages find them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from selftaught.store import Store
from selftaught.store.jsonl import write_jsonl
from selftaught.store.layout import manifest_key, parse_stage_prefix
from selftaught.store.manifest import Manifest, published_key, read_manifest, write_manifest


def publish(store: Store, output: tuple[str, str], records: Iterable[dict[str, Any]]) -> str:
    """Write `records` as output `(stage folder, name)` of a finished stage; its key."""
    prefix, name = output
    key = f"{prefix}/{name}"
    written = write_jsonl(store, key, records)
    manifest = read_manifest(store, manifest_key(prefix))
    if manifest is None:
        stage, iteration = parse_stage_prefix(prefix) or (prefix, None)
        manifest = Manifest(stage=stage, iteration=iteration or 0)
    manifest.outputs[key] = written.as_dict()
    write_manifest(store, manifest_key(prefix), manifest)
    return key


def read_output(store: Store, output: tuple[str, str]) -> list[dict[str, Any]]:
    """The records of a finished stage's output, wherever its winning attempt wrote them."""
    from selftaught.store.jsonl import read_jsonl

    return list(read_jsonl(store, published_key(store, *output)))


def shard_records(store: Store, marker_key: str) -> list[dict[str, Any]]:
    """The records of a finished shard (the file its marker names)."""
    from selftaught.store.jsonl import read_jsonl

    marker = read_manifest(store, marker_key)
    assert marker is not None, f"{marker_key}: shard not finished"
    return [record for key in marker.outputs for record in read_jsonl(store, key)]
