"""A store in a local folder: the embedded default, and any shared filesystem."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from selftaught.errors import disk_full
from selftaught.store.base import ObjectNotFound, StorageDenied, StorageUnavailable, Store, checked_key
from selftaught.store.integrity import SMALL_FILE_BYTES

#: what a user can do about a store whose disk is full
_FREE_THE_STORE = "free space on its disk, or point storage.uri at a larger one"


def _nearest_existing(path: Path) -> Path:
    """`path` or its nearest parent that exists: the file or folder that refused us (a write
    fails on a name that does not exist yet, in a folder that does)."""
    return next((p for p in (path, *path.parents) if p.exists()), path)


def _os_failure(error: OSError) -> StorageUnavailable:
    """An OS error as a store error naming the path. A file where a folder should be, a folder we
    may not write and a read-only file system are permanent: retrying cannot fix them."""
    path = _nearest_existing(Path(error.filename)) if error.filename else None
    if path and path.is_file() and isinstance(error, NotADirectoryError | FileExistsError):
        return StorageDenied(f"{path} is a file where the store needs a folder")
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return StorageDenied(f"{path}: {error.strerror.lower()}; the store needs a folder it can read and write")
    return StorageUnavailable(f"{path or 'store'}: {error.strerror or error}")


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """Turns OS errors into store errors (`_os_failure`); also usable as a decorator."""
    try:
        yield
    except OSError as error:
        raise _os_failure(error) from None


@contextlib.contextmanager
def _writes_into(folder: Path, what: str, hint: str, writing: str | None = None) -> Iterator[None]:
    """OS errors of a write into `folder` as store errors, and a full disk as `OutOfSpace` naming
    `folder` (`what` it is to the user): not the hidden temporary name the bytes went to first, nor
    the file a copy came from, which is all the OS error names."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise disk_full(folder, what, hint, writing) from None
        raise _os_failure(error) from None


def _durable_temp(path: Path, data: bytes) -> Path:
    """`data` written and synced to a hidden temporary file beside `path` (same filesystem, so a
    rename or link publishes it atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = _durable_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_copy(source: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / checked_key(key, self.uri)

    @_os_errors()
    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url(key)}: no such object") from None

    def _writing(self, key: str) -> contextlib.AbstractContextManager[None]:
        return _writes_into(self.root, "the store", _FREE_THE_STORE, key)

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._writing(key):
            atomic_write(self._path(key), data)

    @_os_errors()
    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url(key)}: no such object") from None

    @_os_errors()
    def fingerprint(self, key: str) -> str:
        """A small file by its sha256; a large one (a model's weights) by its size and modification
        time, as rsync's quick check: hashing 140 GB before every plan costs minutes."""
        stat = self._path(key).stat()
        if stat.st_size > SMALL_FILE_BYTES:
            return f"{stat.st_size}:mtime {stat.st_mtime_ns}"
        return super().fingerprint(key)

    @_os_errors()
    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @_os_errors()
    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix)
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            # a key prefix that is not a folder boundary, e.g. "shard-000"
            parent, stem = base.parent, base.name
            if not parent.is_dir():
                return []
            candidates = [p for p in parent.iterdir() if p.name.startswith(stem)]
        else:
            candidates = [base]
        keys = []
        for candidate in candidates:
            paths = [candidate] if candidate.is_file() else candidate.rglob("*")
            for path in paths:
                if path.is_file() and not path.name.startswith("."):
                    keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def upload_file(self, path: Path, key: str) -> None:
        with self._writing(key):
            atomic_copy(Path(path), self._path(key))

    def download_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFound(f"{self.url(key)}: no such object")
        with _writes_into(Path(path).parent, "the folder", "free space on its disk", Path(path).name):
            atomic_copy(source, Path(path))

    def iter_lines(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url(key)}: no such object") from None
        except OSError as error:
            raise _os_failure(error) from None
        with handle:
            yield from handle

    @_os_errors()
    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self._path(key).unlink(missing_ok=True)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self._path(prefix))

    def create_bytes(self, key: str, data: bytes) -> bool:
        with self._writing(key):
            return self._create(self._path(key), data)

    @staticmethod
    def _create(path: Path, data: bytes) -> bool:
        tmp = _durable_temp(path, data)
        try:
            os.link(tmp, path)  # atomic, and refuses an existing name: the first writer wins
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.read_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def replace_bytes(self, key: str, data: bytes, version: str) -> bool:
        path = self._path(key)
        with self._writing(key), _locked(path):  # compare and swap under a lock every replacer takes
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                return False
            if current != version:
                return False
            atomic_write(path, data)
            return True

    @_os_errors()
    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside `path` (flock: released when the process dies)."""
    lock = path.parent / f".{path.name}.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
