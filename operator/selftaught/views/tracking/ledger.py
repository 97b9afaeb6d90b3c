"""What of a run has been logged to a tracking server, kept in the run's own store.

A tracking server is a second copy of what the store holds, so the store says what it has been
told: one small object per item logged (`tracking/<target>/logged/<item>.json`), the server's run
(`run.json`, created with a conditional write so that two stage processes finishing at once share
one run), and what the last try could not log with why (`failed.json`, gone once all is logged).
Logging again is then idempotent (`selftaught track` logs only what has no record), and the
status reads the failure without asking the server. `<target>` is the backend and a hash of where
it logs to, so pointing a run at another server or experiment starts that one from the beginning.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selftaught.store import ObjectNotFound, Store
from selftaught.store.layout import TRACKING as PREFIX

RUN = "run.json"
LOGGED = "logged/"
FAILED = "failed.json"


def target_prefix(backend: str, where: dict[str, Any]) -> str:
    """The ledger's folder for one backend logging to one place (`where`: its URI and experiment,
    or its project and entity)."""
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()[:10]
    return f"{PREFIX}{backend}-{digest}/"


@dataclass(frozen=True)
class Failure:
    """What a backend's last try could not log, and why (never a credential: the error's text
    comes from the client, which names the URL and the status, not the headers)."""

    backend: str
    items: tuple[str, ...]
    error: str
    at: float


class Ledger:
    """The records of one backend's target in one run's store."""

    def __init__(self, store: Store, backend: str, where: dict[str, Any]) -> None:
        self.store = store
        self.backend = backend
        self.prefix = target_prefix(backend, where)
        self.where = where

    def logged(self) -> set[str]:
        found = self.store.list(self.prefix + LOGGED)
        return {key.rsplit("/", 1)[-1].removesuffix(".json") for key in found}

    def record(self, item: str, **details: Any) -> None:
        self.store.write_text(f"{self.prefix}{LOGGED}{item}.json", json.dumps({"item": item, "at": time.time(), **details}))

    def remote_run(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.read_bytes(self.prefix + RUN))
        except (ObjectNotFound, ValueError):
            return None

    def claim_run(self, record: dict[str, Any]) -> dict[str, Any]:
        """Record the server's run unless another process recorded one first: the one recorded."""
        data = json.dumps({**record, "where": self.where}).encode()
        if self.store.create_bytes(self.prefix + RUN, data):
            return record
        return self.remote_run() or record

    def fail(self, items: list[str], error: str) -> None:
        self.store.write_text(self.prefix + FAILED, json.dumps({"backend": self.backend, "items": items, "error": error[:500], "at": time.time()}))

    def clear_failure(self) -> None:
        self.store.delete(self.prefix + FAILED)


def failures(store: Store) -> list[Failure]:
    """Every backend's failure that is still true (`failures_in` the store's ledger)."""
    return failures_in(store.list(PREFIX), store.read_bytes)


def failures_in(keys: list[str], read: Callable[[str], bytes]) -> list[Failure]:
    """The failures among the ledger's `keys` that are still true: the items a backend's last try
    left that have no record yet (a later try by another stage process may have logged some).
    The operator passes the keys its one listing of the store found (`Progress.tracking_keys`)."""
    found = []
    for key in keys:
        if not key.endswith("/" + FAILED):
            continue
        try:
            record = json.loads(read(key))
        except (ObjectNotFound, ValueError):
            continue
        prefix = key.removesuffix(FAILED)
        logged = {k.rsplit("/", 1)[-1].removesuffix(".json") for k in keys if k.startswith(prefix + LOGGED)}
        left = tuple(item for item in record.get("items", []) if item not in logged)
        if left:
            found.append(Failure(str(record.get("backend", "")), left, str(record.get("error", "")), float(record.get("at", 0))))
    return found


def describe(failure: Failure) -> str:
    """One sentence for the status: what was not logged where, why, and what logs it."""
    name = {"mlflow": "MLflow", "wandb": "W&B"}.get(failure.backend, failure.backend)
    shown = ", ".join(failure.items[:4]) + (f" and {len(failure.items) - 4} more" if len(failure.items) > 4 else "")
    return (
        f"{name}: {len(failure.items)} item{'s' if len(failure.items) != 1 else ''} not logged ({shown}): {failure.error}; "
        "the next stage to finish tries again, or run `selftaught track`"
    )
