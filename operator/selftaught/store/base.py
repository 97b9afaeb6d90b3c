"""The artifact store: a flat key space under a root URI, with atomic writes.

Stages only ever talk to a `Store`; whether it is a local folder or an S3 prefix is decided once,
from the run's `storage.uri`. "Atomic" means a reader sees either nothing or the whole object:
local files are written to a temporary name and renamed; S3 objects only appear when the
(multipart) upload completes. A directory (a checkpoint) is done only once its manifest exists.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selftaught.errors import ObjectNotFound, StorageDenied, StorageUnavailable, StoreKeyInvalid

__all__ = ["ObjectNotFound", "StorageDenied", "StorageUnavailable", "Store", "StoreKeyInvalid", "checked_key"]


def checked_key(key: str, root: str) -> str:
    """`key` if it stays below `root`: not absolute, no `..` segment, no NUL. A run's folder is
    named by its namespace and name, so no key may ever climb out of the store it was given."""
    if key.startswith("/") or "\0" in key or ".." in key.split("/"):
        raise StoreKeyInvalid(f"{root}: refusing key {key!r}: it would leave the store (keys are relative paths without '..')")
    return key


class Store(abc.ABC):
    """Keys are relative POSIX paths (`iter-001/judge/_manifest.json`)."""

    uri: str

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes, without reading it."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (recursively), sorted."""

    @abc.abstractmethod
    def upload_file(self, path: Path, key: str) -> None: ...

    @abc.abstractmethod
    def download_file(self, key: str, path: Path) -> None: ...

    @abc.abstractmethod
    def iter_lines(self, key: str) -> Iterator[bytes]:
        """Stream an object line by line without loading it whole."""

    @abc.abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abc.abstractmethod
    def child(self, prefix: str) -> Store:
        """A store rooted at `prefix` below this one."""

    # Conditional writes: what makes a lease and a fenced publish possible on a folder and on S3
    # (If-None-Match / If-Match); two writers never both succeed.

    @abc.abstractmethod
    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist yet; False (and nothing written) if it does."""

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and a version tag for `replace_bytes` (an ETag on S3)."""

    @abc.abstractmethod
    def replace_bytes(self, key: str, data: bytes, version: str) -> bool:
        """Overwrite `key` only if it is still at `version`; False if someone changed it since."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object (no error if it is already gone)."""

    def fingerprint(self, key: str) -> str:
        """What the object is, by content, as cheaply as the store can say (its size and sha256 in
        a folder, its size and ETag on S3): the identity a stage key hashes (`pipeline/identity.py`)."""
        digest = hashlib.sha256()
        for line in self.iter_lines(key):
            digest.update(line)
        return f"{self.size(key)}:{digest.hexdigest()}"

    def url(self, key: str = "") -> str:
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def upload_dir(self, directory: Path, prefix: str) -> dict[str, dict[str, Any]]:
        """Every file of `directory` under `prefix`: key -> its `bytes` and `sha256`, what a marker
        records so that whoever fetches the folder can verify it (`store/integrity.py`)."""
        figures = {}
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}"
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(2**20):
                    digest.update(chunk)
            self.upload_file(path, key)
            figures[key] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
        return figures
