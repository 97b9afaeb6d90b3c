"""What a stage's marker promises of each output it publishes, and the one check every reader of
a published output makes.

A marker records, per output, its `records`, `bytes` and `sha256`. A store copied in part (an
interrupted `aws s3 sync` or rsync), a disk that lost a block, a file cut by hand: what a reader
then finds is not what the stage wrote, and retrying reads the same bytes. So a reader checks what
it reads against the promise — the size before it reads, the records and the checksum as it
streams, the checksum of a file it downloads — and a mismatch is a permanent `StoreCorrupt` that
names the object, both figures and the repair, never a score over fewer examples.

Readers get the promise with the key: a key read from a marker (`store/manifest.py`,
`read_manifest` and `published_key`) is a `Published`, a `str` that carries it, so every reader
that goes through a marker verifies without being told to; a key that is a plain `str` (a user's
own data, a marker written before markers recorded figures) is read as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.errors import StoreCorrupt

#: a file up to this size is checked against its checksum even where that means reading it once
#: more (a checkpoint's config and tokenizer); a larger one (its weights) by its size, unless the
#: reader reads it through anyway (a download, a stream)
SMALL_FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Promise:
    """What the marker at `marker` (its URL) says of one output; a figure it does not record is None."""

    marker: str
    records: int | None = None
    bytes: int | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, marker: str, figures: dict[str, Any]) -> Promise | None:
        """The promise a marker's `outputs` entry makes, or None when it records no figure."""
        records, size, digest = figures.get("records"), figures.get("bytes"), figures.get("sha256")
        promise = cls(
            marker,
            records if isinstance(records, int) else None,
            size if isinstance(size, int) else None,
            digest if isinstance(digest, str) and digest else None,
        )
        return promise if (promise.records, promise.bytes, promise.sha256) != (None, None, None) else None

    def corrupt(self, where: str, found: str, promised: str) -> StoreCorrupt:
        """The error for an output that is not what its marker promises: which, both figures, the repair."""
        return StoreCorrupt(
            f"{where}: {found} where its marker {self.marker} promises {promised} (a partial copy of the store, or a "
            f"damaged disk); restore it from where the store came from, or delete {self.marker} to run that stage again"
        )

    def check_size(self, where: str, size: int) -> None:
        if self.bytes is not None and size != self.bytes:
            raise self.corrupt(where, f"holds {size} bytes", str(self.bytes))

    def check_digest(self, where: str, digest: str) -> None:
        if self.sha256 is not None and digest != self.sha256:
            raise self.corrupt(where, f"has sha256 {digest[:16]}…", f"{self.sha256[:16]}…")

    def check_records(self, where: str, records: int) -> None:
        if self.records is not None and records != self.records:
            raise self.corrupt(where, f"holds {records} records", str(self.records))


class Published(str):
    """The key of a published output, carrying what its marker promises of it (`promise`)."""

    promise: Promise | None

    def __new__(cls, key: str, promise: Promise | None) -> Published:
        value = super().__new__(cls, key)
        value.promise = promise
        return value


def promise_of(key: str) -> Promise | None:
    """What the marker that published `key` promises of it; None for a key of no marker."""
    return key.promise if isinstance(key, Published) else None


def verify_file(promise: Promise, where: str, path: Path, *, checksum: bool | None = None) -> None:
    """Check a local copy of a published file: its size always; its checksum when `checksum`, or,
    when None, when the file is small (`SMALL_FILE_BYTES`)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise promise.corrupt(where, "is missing", "it") from None
    promise.check_size(where, size)
    if promise.sha256 is not None and (checksum if checksum is not None else size <= SMALL_FILE_BYTES):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(2**20):
                digest.update(chunk)
        promise.check_digest(where, digest.hexdigest())
