"""One published object copied from one store into another, checked against what its marker
promises: how a run takes over an earlier run's stage output (`pipeline/reuse.py`).

The cheapest copy the two stores allow: a hard link between folders on one disk (the same bytes,
no space), S3's server-side copy between buckets at one endpoint, else through a temporary file.
The source is checked before the copy — its size always, its checksum where reading it costs
little (`store/integrity.py`'s rule: a small file, or any file read here anyway) — so a partial or
damaged source is refused (`StoreCorrupt`) instead of becoming this run's output.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from selftaught.store.base import Store
from selftaught.store.integrity import SMALL_FILE_BYTES, promise_of
from selftaught.store.local import LocalStore, atomic_copy


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def _link(source: Path, target: Path) -> None:
    """A hard link to `source` at `target`, replacing what is there atomically; a copy across disks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mktemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        os.link(source, temporary)
    except OSError:  # another file system (or one without links): the bytes, written atomically
        atomic_copy(source, target)
        return
    os.replace(temporary, target)


def copy_object(source: Store, key: str, target: Store, target_key: str) -> str:
    """Copy `key` of `source` (a `Published` key carries its promise) to `target_key` of `target`;
    returns how ("linked", "copied in the store", "copied")."""
    promise = promise_of(key)
    where = source.url(key)
    if isinstance(source, LocalStore) and isinstance(target, LocalStore):
        path = source.root / key
        if promise is not None:
            promise.check_size(where, path.stat().st_size)
            if promise.sha256 is not None and path.stat().st_size <= SMALL_FILE_BYTES:
                promise.check_digest(where, _sha256(path))
        _link(path, target.root / target_key)
        return "linked"
    size = source.size(key)
    if promise is not None:
        promise.check_size(where, size)
    from selftaught.store.s3 import S3Store  # boto3 only where an S3 store is in play

    if isinstance(source, S3Store) and isinstance(target, S3Store) and source.endpoint == target.endpoint:
        target.copy_within(source, key, target_key)
        return "copied in the store"
    with tempfile.TemporaryDirectory(prefix="selftaught-reuse-") as folder:
        local = Path(folder) / "object"
        source.download_file(key, local)
        if promise is not None and promise.sha256 is not None:
            promise.check_digest(where, _sha256(local))  # read once more from the page cache: cheap next to the transfer
        target.upload_file(local, target_key)
    return "copied"
