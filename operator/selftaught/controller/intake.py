"""Event intake: what the Kopf handlers hand over becomes passes on the work queue.

Every change of a run, of one of its Jobs or of its judge's server asks for a pass of that run,
but the echo of the operator's own write (`echoes.py`). The latest run body each event (or our
own status write) brought is kept, so most passes need no GET; a pass that must read the run
fresh (a resync, a lost write race) drops it. A deleted run's keys go, with everything the
reconciler kept for it (`forgotten`).

Stage pods that stopped without finishing are kept until a pass has looked at them
(`pod_ends`, then `settle`): an evicted pod is gone a moment after it stopped, and the Job that
replaces it says nothing, so the watch's word is all there is to count the disruption by. A
restarted operator is shown the pods that still exist; those removed while it was down are not
counted (their attempts still spend no retry).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from selftaught.controller.disruptions import PodEnd, pod_end
from selftaught.controller.echoes import Echoes, RunKey
from selftaught.controller.workqueue import WorkQueue

#: stopped pods a pass has looked at, remembered so the watch's later word on them (their
#: deletion) is not looked at again; bounded, like the reporter's memory
SETTLED_LIMIT = 50_000


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
        self._ends: dict[RunKey, dict[str, PodEnd]] = {}  # stopped stage pods no pass has looked at, by name
        self._settled: dict[str, None] = {}  # pod names (ordered: the oldest go first)

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
        with self._lock:
            self._ends.pop(key, None)
        self.echoes.forget(key)
        self._forgotten(key)

    def job_changed(self, namespace: str, run: str, job: dict[str, Any] | None = None, kind: str | None = None) -> None:
        """A pass for every change of a run's Job (or server) but the echo of our own create."""
        if job is not None and self.echoes.is_create_echo(namespace, job, kind):
            return
        self.queue.submit((namespace, run))

    def pod_changed(self, namespace: str, run: str, pod: dict[str, Any] | None, kind: str | None = None) -> None:
        """A stage pod changed: once it has stopped without finishing (Failed, or gone), it is
        kept for the run's next pass, which counts it if it was disrupted."""
        end = pod_end(pod, deleted=kind == "DELETED", now=time.time()) if pod else None
        if end is None or not end.terminal:
            return
        key = (namespace, run)
        with self._lock:
            if end.name in self._settled:
                return
            self._ends.setdefault(key, {})[end.name] = end
        self.queue.submit(key)

    def pod_ends(self, key: RunKey) -> list[PodEnd]:
        """The run's stopped pods that no pass has settled yet, oldest stop first."""
        with self._lock:
            ends = list(self._ends.get(key, {}).values())
        return sorted(ends, key=lambda end: (end.at or 0.0, end.condition is None))

    def settle(self, key: RunKey, names: list[str]) -> None:
        """A pass has looked at these pods (and written what it counted): not again."""
        if not names:
            return
        with self._lock:
            pending = self._ends.get(key, {})
            for name in names:
                pending.pop(name, None)
                self._settled[name] = None
            if not pending:
                self._ends.pop(key, None)
            if len(self._settled) > SETTLED_LIMIT:
                for name in list(self._settled)[: SETTLED_LIMIT // 2]:
                    del self._settled[name]

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
