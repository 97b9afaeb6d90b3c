"""Echo suppression: the watches bring back every write the operator makes, and the echo of its
own write needs no pass.

The echo of a status write is the run's event whose resourceVersion that write returned: the pass
that wrote it saw everything it says, and whatever happened since comes as its own event. The
echo of a Job create is the ADDED event of that Job at the resourceVersion the create returned:
the pass that created it counted it as running (and asked to look at its pods again). Only the
latest write per run and each create's first event are remembered.
"""

from __future__ import annotations

import threading
from typing import Any

RunKey = tuple[str, str]


def _version(body: dict[str, Any]) -> str | None:
    return (body.get("metadata") or {}).get("resourceVersion")


class Echoes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[RunKey, str | None] = {}  # the resourceVersion of our latest status write
        self._created: dict[tuple[str, str], str] = {}  # (namespace, Job) -> its resourceVersion as we created it

    def status_written(self, key: RunKey, written: dict[str, Any]) -> None:
        """`written`: the run as the status write returned it."""
        with self._lock:
            self._written[key] = _version(written)

    def is_status_echo(self, key: RunKey, body: dict[str, Any]) -> bool:
        version = _version(body)
        with self._lock:
            return version is not None and self._written.get(key) == version

    def job_created(self, created: dict[str, Any]) -> None:
        """`created`: the Job as the create returned it."""
        meta = created["metadata"]
        with self._lock:
            self._created[(meta["namespace"], meta["name"])] = meta.get("resourceVersion", "")

    def is_create_echo(self, namespace: str, job: dict[str, Any], kind: str | None) -> bool:
        """Whether this event of a Job is the echo of our create; any event of it ends the wait."""
        meta = job.get("metadata") or {}
        with self._lock:
            ours = self._created.pop((namespace, meta.get("name", "")), None)
        return kind == "ADDED" and ours is not None and ours == meta.get("resourceVersion")

    def forget(self, key: RunKey) -> None:
        with self._lock:
            self._written.pop(key, None)
