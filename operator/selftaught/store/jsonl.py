"""Streaming JSONL: records in and out one at a time, so memory never grows with the data.

A bad line of a user's data (not JSON, not an object, not UTF-8, a lone surrogate escape such as
`\\ud800` that no text can hold) raises `BadRecord` naming the object and the line number, or, when
the caller asks to skip, is counted and passed over. A stage's published output is verified as it
streams against what its marker promises (`store/integrity.py`): its size before the first line,
its records and checksum at the end, and a bad line in it is the store's damage, not a bad record.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selftaught.errors import disk_full
from selftaught.store.base import Store
from selftaught.store.integrity import Promise, promise_of


class BadRecord(ValueError):
    """A malformed input record; the message names where it is."""


#: a JSON escape of a UTF-16 surrogate: only a line with one can hold a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any) -> bool:
    """Whether `value` holds a string that is not text (a surrogate without its pair)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(item) for item in value)
    return False


def parse_record(line: bytes | str) -> dict[str, Any]:
    """One JSONL line as a JSON object; a ValueError that says why it is not one."""
    if isinstance(line, bytes):
        try:  # UTF-8, as JSON Lines says: never a guess at UTF-16 from the first bytes
            line = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start + 1})") from None
    try:
        record = json.loads(line.removeprefix("\ufeff"))  # a byte-order mark opens some files
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if _SURROGATE_ESCAPE.search(line) and _lone_surrogate(record):
        raise ValueError("a lone surrogate escape (such as \\ud800) that no text can hold")
    return record


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
    """Yield (line number, JSON object) for each record of `key`; blank lines are ignored. A key
    read from a marker is verified against its promise (`_verified`)."""
    promise = promise_of(key)
    if promise is not None:
        yield from _verified(store, key, promise)
        return
    for number, line in enumerate(store.iter_lines(key), start=1):
        if not line.strip():
            continue
        try:
            record = parse_record(line)
        except ValueError as error:
            reason = f"{store.url(key)}:{number}: malformed JSONL line: {error}"
            if skip is None:
                raise BadRecord(reason) from None
            skip.add(reason)
            continue
        yield number, record


def _verified(store: Store, key: str, promise: Promise) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of a published output, checked against its marker's promise: its size before
    the first record (a cut file fails before any work), every line as it streams, and its record
    count and sha256 once read through (hashing costs little next to parsing each line)."""
    where = store.url(key)
    if promise.bytes is not None:
        promise.check_size(where, store.size(key))
    digest, size, records = hashlib.sha256(), 0, 0
    for number, line in enumerate(store.iter_lines(key), start=1):
        digest.update(line)
        size += len(line)
        if not line.strip():
            continue
        try:
            record = parse_record(line)
        except ValueError as error:
            raise promise.corrupt(f"{where}:{number}", f"is {error}", "whole JSON records") from None
        records += 1
        yield number, record
    promise.check_size(where, size)
    promise.check_records(where, records)
    promise.check_digest(where, digest.hexdigest())


def local_json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, object) for each non-blank line of a local JSONL file, or (line number, why
    it is not a JSON object: not UTF-8, not JSON, a lone surrogate) for a bad one: the callers name
    every bad line as `FILE:LINE: reason`. A file that cannot be opened raises OSError."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield number, parse_record(line)
            except ValueError as error:
                yield number, str(error)


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
    leaves a half-written output that a later reader would take for done. A full temporary folder
    is named as such (`OutOfSpace`), not as an error of a file without a name.
    """

    def __init__(self, store: Store, key: str):
        self.store, self.key = store, key
        with self._space():
            fd, self._tmp = tempfile.mkstemp(prefix="selftaught-", suffix=".jsonl")
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.records = 0
        self.bytes = 0

    @contextlib.contextmanager
    def _space(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            folder = Path(self._tmp).parent if hasattr(self, "_tmp") else Path(tempfile.gettempdir())
            hint = "free space there, or set TMPDIR to a folder on a larger disk"
            raise disk_full(folder, "the temporary folder (TMPDIR)", hint, f"{self.key} before its upload") from None

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._space():
            self._handle.write(line)
        self._hash.update(line)
        self.records += 1
        self.bytes += len(line)

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def close(self) -> WrittenFile:
        try:
            with self._space():
                self._handle.close()
            self.store.upload_file(Path(self._tmp), self.key)
        finally:
            Path(self._tmp).unlink(missing_ok=True)
        return WrittenFile(self.key, self.records, self._hash.hexdigest(), self.bytes)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # what is still buffered may not fit either: it is dropped
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


