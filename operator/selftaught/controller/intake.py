"""Event intake: what the Kopf handlers hand over becomes passes on the work queue.

Every change of a run, of one of its Jobs or of its judge's server asks for a pass of that run,
but the echo of the operator's own write (`echoes.py`). The latest run body each event (or our
own status write) brought is kept, so most passes need no GET; a pass that must read the run
fresh (a resync, a lost write race) drops it. A deleted run's keys go, with everything the
reconciler kept for it (`forgotten`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from selftaught.controller.echoes import Echoes, RunKey
from selftaught.controller.workqueue import WorkQueue


def _newer(body: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether `body` is a later version than `than` (resourceVersions are etcd revisions:
    numbers in practice, opaque strings by contract; when not numbers, the later arrival wins)."""
    if than is None:
        return True
    new, old = body["metadata"].get("resourceVersion", ""), than["metadata"].get("resourceVersion", "")
    return int(new) >= int(old) if new.isdigit() and old.isdigit() else True


class Intake:
    def __init__(self, queue: WorkQueue[RunKey], echoes: Echoes, forgotten: Callable[[RunKey], None]):
        self.queue, self.echoes, self._forgotten = queue, echoes, forgotten
        self._lock = threading.Lock()
        self._runs: dict[RunKey, dict[str, Any]] = {}

    # -- the handlers' events ----------------------------------------------------------------------

    def run_changed(self, body: dict[str, Any]) -> None:
        """A pass for every change but the echo of our own status write."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        echo = self.echoes.is_status_echo(key, body)
        self.remember(key, body)
        if not echo:
            self.queue.submit(key)

    def run_deleted(self, namespace: str, name: str) -> None:
        """The run was deleted: its Jobs go with it (owner references); its data stays."""
        key = (namespace, name)
        self.queue.forget(key)
        self.drop(key)
        self.echoes.forget(key)
        self._forgotten(key)

    def job_changed(self, namespace: str, run: str, job: dict[str, Any] | None = None, kind: str | None = None) -> None:
        """A pass for every change of a run's Job (or server) but the echo of our own create."""
        if job is not None and self.echoes.is_create_echo(namespace, job, kind):
            return
        self.queue.submit((namespace, run))

    def reconcile(self, namespace: str, name: str, *, fresh: bool = False) -> None:
        """One pass now (or one more after the pass under way)."""
        self.queue.submit((namespace, name), fresh=fresh)

    # -- the latest run bodies ---------------------------------------------------------------------

    def remember(self, key: RunKey, body: dict[str, Any]) -> None:
        with self._lock:
            if _newer(body, self._runs.get(key)):
                self._runs[key] = body

    def latest(self, key: RunKey) -> dict[str, Any] | None:
        with self._lock:
            return self._runs.get(key)

    def drop(self, key: RunKey) -> None:
        """The next pass reads the run fresh."""
        with self._lock:
            self._runs.pop(key, None)
