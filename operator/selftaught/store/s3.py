"""A store under an S3 prefix (AWS S3, MinIO, Ceph RGW...) through boto3.

Big objects (checkpoints) go through boto3's transfer manager: multipart, parallel, retried.
Credentials come from the standard AWS chain (env vars from a Kubernetes Secret, IRSA, ...),
so they never pass through our code or our messages.

Every call is bounded in wall time (`storage.timeoutSeconds`, retries included): a store that
accepts connections but never answers (a proxy that swallows requests, a wedged server) fails
the call with one sentence naming the endpoint, and a call that has waited `NOTICE_SECONDS` says
what it is waiting for (`store/patience.py`), so no command sits silent for minutes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from selftaught.errors import disk_full
from selftaught.store.base import ObjectNotFound, StorageDenied, StorageUnavailable, Store, StoreKeyInvalid, checked_key
from selftaught.store.patience import retried, waiting

#: how long one call may take, retries included, when the run does not say (`storage.timeoutSeconds`)
DEFAULT_TIMEOUT_SECONDS = 120

_TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20, max_concurrency=8)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
#: the calls where a 404 means "no such object"; on any other (a put, a listing) it means that the
#: endpoint is not the S3 service it should be
_READS = {"GetObject", "HeadObject"}
#: a conditional write that lost: the object exists (If-None-Match), changed or vanished (If-Match),
#: or another conditional write to it is in flight
_LOST_RACE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
#: every error boto3 raises on a call or while streaming a body: each is translated by `_fail`
_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)


_STARTED = "selftaught_started"


@functools.cache
def _client(endpoint: str | None, region: str | None, budget: float = DEFAULT_TIMEOUT_SECONDS):  # one client per endpoint and process
    """A client whose every call ends within `budget` seconds: each attempt waits at most 40 % of
    it for an answer (a tenth, at most 10 s, to connect), and an attempt is retried only while
    another one still fits in what is left (throttling, a 5xx, a dropped connection: retried with
    backoff as boto3 does; a store that never answers: two attempts, then the error)."""
    connect, read = min(10.0, budget / 10), budget * 0.4
    config = botocore.config.Config(
        retries={"max_attempts": 8, "mode": "adaptive"},
        connect_timeout=connect,
        read_timeout=read,
        s3={"addressing_style": "path"} if endpoint else None,
    )
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)

    def started(context: dict[str, Any], **_: Any) -> None:
        context.setdefault(_STARTED, time.monotonic())

    def within_budget(request_dict: dict[str, Any], caught_exception: Exception | None = None, response: Any = None, **_: Any) -> bool | None:
        if caught_exception is not None or (response and response[0].status_code >= 500):
            retried(str(caught_exception) if caught_exception is not None else f"HTTP {response[0].status_code}")
        began = request_dict.get("context", {}).get(_STARTED)
        if began is not None and time.monotonic() - began + read > budget:
            return False  # no retry: another attempt could outlast the budget (boto3's handler decides otherwise)
        return None

    client.meta.events.register("before-call.s3", started)
    client.meta.events.register_first("needs-retry.s3", within_budget)
    return client


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreKeyInvalid(f"{uri}: not an s3://bucket/prefix URI")
    return parsed.netloc, parsed.path.strip("/")


class S3Store(Store):
    def __init__(self, uri: str, *, endpoint: str | None = None, region: str | None = None, timeout: float | None = None):
        self.bucket, self.prefix = split_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint, self.region = endpoint, region
        self.timeout = float(timeout or DEFAULT_TIMEOUT_SECONDS)
        self.client = _client(endpoint, region, self.timeout)

    @property
    def where(self) -> str:
        """The endpoint, as a user wrote it (or AWS S3's)."""
        return self.endpoint or "AWS S3"

    def _waiting(self, operation: str, key: str) -> contextlib.AbstractContextManager[None]:
        return waiting(f"the store at {self.where} ({operation} {self.url(key)})", f"it gives up after {self.timeout:.0f} s (storage.timeoutSeconds)")

    def _key(self, key: str) -> str:
        key = checked_key(key, self.uri)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, error: Exception, key: str) -> StorageUnavailable:
        where = self.url(key)
        if isinstance(error, boto3.exceptions.S3UploadFailedError) and isinstance(error.__context__, botocore.exceptions.ClientError):
            error = error.__context__  # the transfer manager wraps the S3 error it got
        if isinstance(error, botocore.exceptions.ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND and error.operation_name not in _READS:
                return StorageDenied(
                    f"{where}: the endpoint {self.endpoint or 'of AWS S3'} answered 404 Not Found to {error.operation_name}; "
                    f"check storage.endpoint and that bucket {self.bucket!r} exists"
                )
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{where}: no such object")
            if code == "NoSuchBucket":
                return StorageDenied(f"{where}: bucket {self.bucket!r} does not exist")
            if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                return StorageDenied(f"{where}: access denied ({code}); check the credentials Secret")
            return StorageUnavailable(f"{where}: S3 error {code}")
        if isinstance(error, botocore.exceptions.NoCredentialsError):
            return StorageDenied(f"{where}: no S3 credentials found (set storage.credentialsSecret)")
        if isinstance(error, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError):
            return StorageUnavailable(
                f"{where}: the store at {self.where} did not answer within storage.timeoutSeconds ({self.timeout:.0f} s, retries "
                "included): check that it is up and that nothing on the way swallows requests"
            )
        if isinstance(error, botocore.exceptions.BotoCoreError):
            return StorageUnavailable(f"{where}: storage unreachable: {error}")
        return StorageUnavailable(f"{where}: {error}")

    def read_bytes(self, key: str) -> bytes:
        try:
            with self._waiting("GetObject", key):
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            with self._waiting("PutObject", key):
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def size(self, key: str) -> int:
        try:
            with self._waiting("HeadObject", key):
                return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def fingerprint(self, key: str) -> str:
        try:
            with self._waiting("HeadObject", key):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except _ERRORS as error:
            raise self._fail(error, key) from None
        return f"{head['ContentLength']}:{head.get('ETag', '').strip(chr(34))}"

    def copy_within(self, source: S3Store, source_key: str, key: str) -> None:
        """S3's server-side copy from another S3 store at the same endpoint: no byte passes through
        us (the transfer manager's multipart copy above 5 GB)."""
        try:
            with self._waiting("CopyObject", key):
                self.client.copy({"Bucket": source.bucket, "Key": source._key(source_key)}, self.bucket, self._key(key), Config=_TRANSFER)
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def exists(self, key: str) -> bool:
        try:
            with self._waiting("HeadObject", key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except botocore.exceptions.ClientError as error:
            failure = self._fail(error, key)
            if isinstance(failure, ObjectNotFound):
                return False
            raise failure from None
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        try:
            with self._waiting("ListObjectsV2", prefix):
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                    keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except _ERRORS as error:
            raise self._fail(error, prefix) from None
        return sorted(keys)

    def upload_file(self, path: Path, key: str) -> None:
        try:
            with self._waiting("upload of", key):
                self.client.upload_file(str(path), self.bucket, self._key(key), Config=_TRANSFER)
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def download_file(self, key: str, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:  # the transfer manager writes a temporary file and renames it when complete
            with self._waiting("download of", key):
                self.client.download_file(self.bucket, self._key(key), str(path), Config=_TRANSFER)
        except _ERRORS as error:
            raise self._fail(error, key) from None
        except OSError as error:  # the local side: a full disk is named, not the transfer's temporary file
            if error.errno == errno.ENOSPC:
                raise disk_full(Path(path).parent, "the folder", "free space on its disk", Path(path).name) from None
            raise

    def iter_lines(self, key: str) -> Iterator[bytes]:
        try:
            with self._waiting("GetObject", key):
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except _ERRORS as error:
            raise self._fail(error, key) from None
        try:  # a connection lost mid-stream surfaces here, not at get_object (a stalled one after read_timeout)
            yield from body.iter_lines(keepends=True)
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(k) for k in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            try:
                with self._waiting("DeleteObjects", prefix):
                    response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
            except _ERRORS as error:
                raise self._fail(error, prefix) from None
            if response.get("Errors"):  # per-key failures come back in a 200 response
                first = response["Errors"][0]
                raise StorageUnavailable(f"{self.url(first.get('Key', prefix))}: delete failed: {first.get('Code')} {first.get('Message', '')}")

    def child(self, prefix: str) -> S3Store:
        return S3Store(f"{self.uri}/{checked_key(prefix, self.uri).strip('/')}", endpoint=self.endpoint, region=self.region, timeout=self.timeout)

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> bool:
        try:
            with self._waiting("PutObject", key):
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
            return True
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            # a 404 is a lost race only for If-Match (the object vanished); a create never gets one
            if code in (_LOST_RACE if "IfMatch" in condition else _LOST_RACE - _NOT_FOUND):
                return False
            raise self._fail(error, key) from None
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def create_bytes(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            with self._waiting("GetObject", key):
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return response["Body"].read(), response["ETag"]
        except _ERRORS as error:
            raise self._fail(error, key) from None

    def replace_bytes(self, key: str, data: bytes, version: str) -> bool:
        return self._conditional_put(key, data, IfMatch=version)

    def delete(self, key: str) -> None:
        try:
            with self._waiting("DeleteObject", key):
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _ERRORS as error:
            raise self._fail(error, key) from None
