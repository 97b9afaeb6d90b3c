"""Artifact stores (local folders, S3) and the run's layout in them.

`open_uri` is how a run opens any URI it names (its store, a data source, a model): it chooses
the S3 endpoint on purpose (`endpoint_for`); `open_store` opens a URI at the endpoint it is given.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlparse

from selftaught.store.base import ObjectNotFound, StorageDenied, StorageUnavailable, Store
from selftaught.store.local import LocalStore


def open_store(uri: str, *, endpoint: str | None = None, region: str | None = None, timeout: float | None = None) -> Store:
    """`s3://...` gives an S3 store (each call bounded by `timeout` seconds, the run's
    `storage.timeoutSeconds`); anything else (a path, `file://...`) a local folder."""
    if uri.startswith("s3://"):
        from selftaught.store.s3 import S3Store  # boto3 is only imported when needed

        return S3Store(uri, endpoint=endpoint, region=region, timeout=timeout)
    return LocalStore(uri.removeprefix("file://"))


class StorageAddress(Protocol):
    """Where a run's store is (the spec's `storage`, `api/spec.py`'s `Storage`)."""

    @property
    def uri(self) -> str: ...
    @property
    def endpoint(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def source_endpoint(self) -> str | None: ...
    @property
    def timeout_seconds(self) -> int: ...


def _bucket(uri: str) -> str | None:
    return (urlparse(uri).netloc or None) if uri.startswith("s3://") else None


def endpoint_for(uri: str, storage: StorageAddress | None) -> str | None:
    """The S3 endpoint through which a run reads `uri`: `storage.endpoint` for a URI in the run
    store's own bucket (the store itself, its checkpoints, data kept beside it);
    `storage.sourceEndpoint` for an `s3://` URI in any other bucket; else None, AWS S3's default
    endpoint (boto3's: `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` where set). Never the run
    store's endpoint for another bucket by accident: a public dataset on AWS stays on AWS when
    the runs live on MinIO."""
    bucket = _bucket(uri)
    if storage is None or bucket is None:
        return None
    return storage.endpoint if bucket == _bucket(storage.uri) else storage.source_endpoint


def open_uri(uri: str, storage: StorageAddress | None) -> Store:
    """A store for `uri`, a run store's root or a data or model source, at the endpoint
    `endpoint_for` chooses, in the run store's region, with its time budget per call."""
    return open_store(
        uri, endpoint=endpoint_for(uri, storage), region=storage.region if storage else None, timeout=storage.timeout_seconds if storage else None
    )


__all__ = ["LocalStore", "ObjectNotFound", "StorageAddress", "StorageDenied", "StorageUnavailable", "Store", "endpoint_for", "open_store", "open_uri"]
