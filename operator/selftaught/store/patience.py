"""Saying what a slow call waits for: a store call that has had no answer for `NOTICE_SECONDS`
logs one line naming what it waits for (and how long it may), and what its tries met so far (no
answer at all, or the error it retries), then one every `REMIND_SECONDS` while it still waits.
One watcher thread per process looks at the calls in flight once a second; a call that answers
in time costs two dictionary writes."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("selftaught.store")
NOTICE_SECONDS = 5.0
REMIND_SECONDS = 30.0

_lock = threading.Lock()
_ids = itertools.count()
#: call id -> (what it waits for, how long it may, when it started, when it was last announced)
_in_flight: dict[int, tuple[str, str, float, float | None]] = {}
#: call id -> what its last try met (`retried`)
_tries: dict[int, str] = {}
_watcher: threading.Thread | None = None
_current = threading.local()


def retried(why: str) -> None:
    """Note, for the call this thread waits in, what its last try met (an error it retries)."""
    call = getattr(_current, "call", None)
    if call is not None:
        with _lock:
            _tries[call] = why


@contextlib.contextmanager
def waiting(what: str, limit: str) -> Iterator[None]:
    """Within the block, a wait for `what` ("the store at http://minio:9000 (GetObject s3://…)")
    that may last `limit` ("gives up after 120 s (storage.timeoutSeconds)")."""
    global _watcher
    call = next(_ids)
    with _lock:
        _in_flight[call] = (what, limit, time.monotonic(), None)
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="selftaught-store-patience", daemon=True)
            _watcher.start()
    outer, _current.call = getattr(_current, "call", None), call
    try:
        yield
    finally:
        _current.call = outer
        with _lock:
            _in_flight.pop(call, None)
            _tries.pop(call, None)


def _watch() -> None:
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        due = []
        with _lock:
            for call, (what, limit, started, told) in _in_flight.items():
                if now - started >= NOTICE_SECONDS and (told is None or now - told >= REMIND_SECONDS):
                    _in_flight[call] = (what, limit, started, now)
                    due.append((what, limit, now - started, _tries.get(call)))
        for what, limit, seconds, met in due:
            log.warning("waiting %.0f s for %s: %s; %s", seconds, what, f"retrying after {met}" if met else "no answer yet", limit)
