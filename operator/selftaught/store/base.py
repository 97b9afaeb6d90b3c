"""The artifact store: a flat key space under a root URI, with atomic writes.

Stages only ever talk to a `Store`; whether it is a local folder or an S3 prefix is decided once,
from the run's `storage.uri`. "Atomic" means a reader sees either nothing or the whole object:
local files are written to a temporary name and renamed; S3 objects only appear when the
(multipart) upload completes. A directory (a checkpoint) is done only once its manifest exists.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from pathlib import Path

from selftaught.errors import ObjectNotFound, StorageDenied
from selftaught.errors import StorageUnavailable as StoreError

__all__ = ["ObjectNotFound", "StorageDenied", "Store", "StoreError"]


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

    def url(self, key: str = "") -> str:
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def upload_dir(self, directory: Path, prefix: str) -> list[str]:
        keys = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}"
            self.upload_file(path, key)
            keys.append(key)
        return keys
