"""Artifact stores (local folders, S3) and the run's layout in them."""

from __future__ import annotations

from selftaught.store.base import ObjectNotFound, StorageDenied, StorageUnavailable, Store
from selftaught.store.local import LocalStore


def open_store(uri: str, *, endpoint: str | None = None, region: str | None = None) -> Store:
    """`s3://...` gives an S3 store; anything else (a path, `file://...`) a local folder."""
    if uri.startswith("s3://"):
        from selftaught.store.s3 import S3Store  # boto3 is only imported when needed

        return S3Store(uri, endpoint=endpoint, region=region)
    return LocalStore(uri.removeprefix("file://"))


__all__ = ["LocalStore", "ObjectNotFound", "StorageDenied", "StorageUnavailable", "Store", "open_store"]
