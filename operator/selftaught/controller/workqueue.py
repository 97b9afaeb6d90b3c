"""A coalescing work queue: one pass at a time per key, bursts folded, delayed revisits.

`submit(key)` works on a key now, in the caller's thread — unless that key is being worked on
already; then the running pass simply goes round once more when it ends, so a burst of events
costs at most two passes. The work returns how soon to come back (or None): the latest pass saw
the latest state, so its answer replaces what earlier passes asked for (a look at pods that were
not ready yet is not needed once an event said they are); `later` asks for a visit on top, the
earliest winning. A timer thread (or a test, with its own clock, through `run_due`) works on keys
whose time has come. Apart from those visits, `resync(key, delay)` arms
one fresh pass (the work re-reads its object) for when the key has been quiet that long: each
call re-arms it, so a key that keeps getting events is never re-read for nothing. Nothing here
knows about Kubernetes.

A pass that raises (an API error other than the 409 the work handles itself, a bug) is not the
end of its key: it is visited again after a back-off that doubles with each failure in a row
(`ERROR_BACKOFF`, at most `MAX_ERROR_BACKOFF`), as controller-runtime's rate-limited requeue does,
and a pass that succeeds resets it. Without that, a key whose timed visit failed would wait for
its next event, which a run in back-off or with pending pods may never get.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
#: the first revisit after a failed pass, doubled per failure in a row, capped
ERROR_BACKOFF = 1.0
MAX_ERROR_BACKOFF = 300.0
#: work(key, fresh) -> seconds until the key wants another pass, or None
Work = Callable[[K, bool], "float | None"]


class WorkQueue(Generic[K]):
    def __init__(self, work: Work[K], *, clock: Callable[[], float] = time.monotonic, min_delay: float = 0.0, timer_workers: int = 4):
        self._work = work
        self._clock = clock
        self._min_delay = min_delay
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._busy: set[K] = set()
        self._again: dict[K, bool] = {}  # key -> fresh, for a pass asked for while one ran
        self._due: dict[K, float] = {}  # key -> when to visit it
        self._resync_at: dict[K, float] = {}  # key -> when to read it fresh, if nothing came first
        self._errors: dict[K, int] = {}  # key -> passes failed in a row
        self._stopping = False
        self._timer_workers = timer_workers
        self._pool: ThreadPoolExecutor | None = None

    # -- working on a key ----------------------------------------------------------------------

    def submit(self, key: K, *, fresh: bool = False) -> None:
        """Work on `key` now, or make the pass already under way go round once more."""
        with self._lock:
            if key in self._busy:
                self._again[key] = self._again.get(key, False) or fresh
                return
            self._busy.add(key)
        try:
            while True:
                delay = self._work(key, fresh)
                with self._lock:
                    self._due.pop(key, None)
                    self._errors.pop(key, None)
                    if delay is not None:
                        self._later(key, delay)
                    if key not in self._again:
                        self._busy.discard(key)
                        return
                    fresh = self._again.pop(key)
        except BaseException:
            with self._lock:
                self._busy.discard(key)
                self._again.pop(key, None)
                errors = self._errors[key] = self._errors.get(key, 0) + 1
                # come back, fresh, later and later; an event meanwhile comes first
                self._resync_at[key] = min(self._resync_at.get(key, float("inf")), self._clock() + self.error_backoff(errors))
                self._wakeup.notify()
            raise

    @staticmethod
    def error_backoff(errors: int) -> float:
        """How long a key waits after `errors` failed passes in a row."""
        return min(ERROR_BACKOFF * 2 ** (errors - 1), MAX_ERROR_BACKOFF)

    def later(self, key: K, delay: float) -> None:
        """Work on `key` again in `delay` seconds (sooner if something else asks sooner)."""
        with self._lock:
            self._later(key, delay)

    def _later(self, key: K, delay: float) -> None:
        when = self._clock() + max(delay, self._min_delay)
        if key not in self._due or when < self._due[key]:
            self._due[key] = when
            self._wakeup.notify()

    def resync(self, key: K, delay: float) -> None:
        """A fresh pass on `key` in `delay` seconds, replacing the one armed before."""
        with self._lock:
            self._resync_at[key] = self._clock() + max(delay, self._min_delay)
            self._wakeup.notify()

    def forget(self, key: K) -> None:
        """The key is gone: no revisit. (A pass under way finishes.)"""
        with self._lock:
            self._due.pop(key, None)
            self._resync_at.pop(key, None)
            self._again.pop(key, None)
            self._errors.pop(key, None)

    # -- the timer ------------------------------------------------------------------------------

    def take_due(self) -> list[tuple[K, bool]]:
        """Remove and return the keys whose time has come, fresh where their resync is due."""
        now = self._clock()
        with self._lock:
            visits = [key for key, when in self._due.items() if when <= now]
            resyncs = [key for key, when in self._resync_at.items() if when <= now]
            for key in visits:
                del self._due[key]
            for key in resyncs:
                del self._resync_at[key]
        fresh = set(resyncs)
        return [(key, True) for key in resyncs] + [(key, False) for key in visits if key not in fresh]

    def run_due(self) -> list[K]:
        """Work on every key whose time has come, here and now (for tests with a fake clock)."""
        due = self.take_due()
        for key, fresh in due:
            self._submit_logged(key, fresh)
        return [key for key, _ in due]

    def _submit_logged(self, key: K, fresh: bool) -> None:
        try:
            self.submit(key, fresh=fresh)
        except Exception:  # one broken key must not stop the others' revisits
            log.exception("work on %s failed", key)

    def start(self) -> None:
        """A thread that hands due keys to a small pool, so one slow pass delays no other key."""
        self._pool = ThreadPoolExecutor(self._timer_workers, thread_name_prefix="selftaught-requeue")
        threading.Thread(target=self._timer_loop, args=(self._pool,), name="selftaught-timer", daemon=True).start()

    def _timer_loop(self, pool: ThreadPoolExecutor) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                next_at = min((*self._due.values(), *self._resync_at.values()), default=None)
                wait = None if next_at is None else max(0.0, next_at - self._clock())
                if wait is None or wait > 0:
                    self._wakeup.wait(timeout=wait if wait is not None else 1.0)
                    continue
            for key, fresh in self.take_due():
                pool.submit(self._submit_logged, key, fresh)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
