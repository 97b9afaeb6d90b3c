"""Streaming JSONL: records in and out one at a time, so memory never grows with the data.

A bad line raises `BadRecord` naming the object and the line number, or, when the caller asks to
skip, is counted and passed over.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selftaught.store.base import Store


class BadRecord(ValueError):
    """A malformed input record; the message names where it is."""


@dataclass
class SkipCounter:
    """Counts records passed over under `onBadRecord: skip`, keeping the first few reasons."""

    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < 5:
            self.examples.append(reason)


def numbered_jsonl(
    store: Store, key: str, *, skip: SkipCounter | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, JSON object) for each record of `key`; blank lines are ignored."""
    for number, line in enumerate(store.iter_lines(key), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as error:
            reason = f"{store.url(key)}:{number}: malformed JSONL line: {error}"
            if skip is None:
                raise BadRecord(reason) from None
            skip.add(reason)
            continue
        yield number, record


def local_json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, object) for each non-blank line of a local JSONL file, or (line number, why
    it is not a JSON object) for a bad one: the callers name every bad line as `FILE:LINE: reason`.
    A file that cannot be opened or decoded raises OSError or UnicodeDecodeError."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, f"not JSON ({error.msg})"
                continue
            yield number, record if isinstance(record, dict) else "not a JSON object"


def read_jsonl(store: Store, key: str, *, skip: SkipCounter | None = None) -> Iterator[dict[str, Any]]:
    for _, record in numbered_jsonl(store, key, skip=skip):
        yield record


@dataclass
class WrittenFile:
    key: str
    records: int
    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "sha256": self.sha256, "bytes": self.bytes}


class JsonlWriter:
    """Writes records to a local temporary file and publishes it atomically on `close()`.

    Nothing is visible in the store until the whole file is there, so a killed stage never
    leaves a half-written output that a later reader would take for done.
    """

    def __init__(self, store: Store, key: str):
        self.store, self.key = store, key
        fd, self._tmp = tempfile.mkstemp(prefix="selftaught-", suffix=".jsonl")
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.records = 0
        self.bytes = 0

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        self._handle.write(line)
        self._hash.update(line)
        self.records += 1
        self.bytes += len(line)

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> WrittenFile:
        self._handle.close()
        try:
            self.store.upload_file(Path(self._tmp), self.key)
        finally:
            Path(self._tmp).unlink(missing_ok=True)
        return WrittenFile(self.key, self.records, self._hash.hexdigest(), self.bytes)

    def abort(self) -> None:
        self._handle.close()
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:
            self.written = self.close()
        else:
            self.abort()


def write_jsonl(store: Store, key: str, records: Iterable[dict[str, Any]]) -> WrittenFile:
    with JsonlWriter(store, key) as writer:
        writer.write_all(records)
    return writer.written


def dotted_get(record: Any, path: str) -> Any:
    """`conversation.0.content` → record["conversation"][0]["content"]; KeyError if absent."""
    value = record
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit():
            index = int(part)
            if index >= len(value):
                raise KeyError(path)
            value = value[index]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(path)
    return value


