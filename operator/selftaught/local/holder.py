"""Who runs a run now, as its lease says (`local/lease.py`), for `selftaught status`: a live
`selftaught run` (named by PID and host), nobody (the lease is free, expired, or its process is
gone), or no way to tell (a store without a lease, which an operator may be running)."""

from __future__ import annotations

import json
import time

from selftaught.local.lease import Holder
from selftaught.store import LocalStore, ObjectNotFound, StorageUnavailable, Store
from selftaught.store.layout import LEASE
from selftaught.views.state import Runner


def runner_of(store: Store, now: float | None = None) -> Runner:
    """The run's runner. A folder store is only ever run by `selftaught run` (a cluster run needs
    an `s3://` store), so no lease there means nobody runs it; an S3 store without a lease may be
    the operator's."""
    now = time.time() if now is None else now
    try:
        holder = Holder(**json.loads(store.read_bytes(LEASE)))
    except ObjectNotFound:
        holder = None
    except (StorageUnavailable, ValueError, TypeError):
        return Runner(None)
    if holder is not None and holder.alive(now):
        return Runner(True, f"selftaught run, {holder.describe(now)}")
    if holder is not None:
        return Runner(False, f"its last runner, process {holder.pid} on host {holder.host}, is gone")
    return Runner(False) if isinstance(store, LocalStore) else Runner(None)
