"""One runner per run: a lease in the run's store.

`selftaught run` holds `lease.json` (who: host, PID, since when; until when) while it runs and
renews it in the background. A second runner on the same store is refused with a sentence that
names the holder. On the holder's own host the lease goes with its process: taken over at once
when that process is gone (its PID is no longer that process: another start time), never while
it lives, expired or not — a runner stopped with Ctrl-Z renews nothing, yet its stages are only
paused, and the refusal says so. From another host, where the process cannot be seen, a lease
is taken over once it expires. Taking over and renewing are conditional writes (If-Match on S3,
compare-and-swap on a folder), so of two runners racing for a free lease exactly one gets it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import psutil

from selftaught.errors import ObjectNotFound, Reason, SelftaughtError
from selftaught.store import Store
from selftaught.store.layout import LEASE

log = logging.getLogger(__name__)
#: how long a lease lasts without renewal; renewed every third of it
TTL_SECONDS = 60.0


class RunInProgress(SelftaughtError):
    """Another runner holds the run's lease."""

    reason = Reason.RUN_IN_PROGRESS


class LeaseLost(SelftaughtError):
    """This runner's lease was taken over (it could not renew in time): it must stop."""

    reason = Reason.LEASE_LOST


@dataclass(frozen=True)
class Holder:
    token: str
    host: str
    pid: int
    started: float  #: the holder process's start time: tells it from a later process with its PID
    acquired: float
    expires: float

    @classmethod
    def of_this_process(cls, now: float, ttl: float) -> Holder:
        pid = os.getpid()
        return cls(uuid.uuid4().hex, socket.gethostname(), pid, psutil.Process(pid).create_time(), now, now + ttl)

    def process(self) -> psutil.Process | None:
        """The holder's process, if it runs on this host and is still that process (PID and start time)."""
        if self.host != socket.gethostname():
            return None
        try:
            process = psutil.Process(self.pid)
            return process if abs(process.create_time() - self.started) < 1.0 else None
        except psutil.Error:
            return None

    def alive(self, now: float) -> bool:
        """Whether the lease still holds: on this host while its process lives, whatever its
        expiry; on another (whose processes cannot be seen) until it expires."""
        if self.host != socket.gethostname():
            return now < self.expires
        return self.process() is not None

    def describe(self, now: float) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.acquired))
        if now < self.expires:
            expiry = f"its lease expires in {int(self.expires - now)} s"
        else:
            expiry = f"its lease expired {int(now - self.expires)} s ago, but the process lives"
        return f"process {self.pid} on host {self.host} (since {since}; {expiry})"

    def refusal(self, now: float, where: str) -> str:
        """Why a second runner may not take this run over, and what to do."""
        process = self.process()
        with contextlib.suppress(psutil.Error):
            if process is not None and process.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                return (
                    f"{where}: this run is stopped (Ctrl-Z) in process {self.pid} on this host, its stages paused with it; "
                    f"`fg` it or end it (`kill {self.pid}; kill -CONT {self.pid}`: a stopped process acts on a signal once continued)"
                )
        return f"{where}: this run is already running in {self.describe(now)}; stop that one first (or wait for its lease to expire if it is gone)"


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None  # unreadable: nobody can prove they hold it


class Lease:
    """The run's lease for this process; a context manager that renews it until released."""

    def __init__(self, store: Store, *, ttl: float = TTL_SECONDS, clock=time.time):
        self.store, self.ttl, self.clock = store, ttl, clock
        self.holder: Holder | None = None
        self._version = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: LeaseLost | None = None

    def _record(self, holder: Holder) -> bytes:
        return json.dumps(asdict(holder)).encode()

    def acquire(self) -> None:
        now = self.clock()
        mine = Holder.of_this_process(now, self.ttl)
        for _ in range(3):  # a lost race to a lease that was just released or expired: look again
            if self.store.create_bytes(LEASE, self._record(mine)):
                break
            try:
                data, version = self.store.read_versioned(LEASE)
            except ObjectNotFound:
                continue
            current = _parse(data)
            if current is not None and current.alive(now):
                raise RunInProgress(current.refusal(now, self.store.url()))
            if self.store.replace_bytes(LEASE, self._record(mine), version):
                if current is not None:
                    log.info("took over the lease of %s, which is gone", current.describe(now))
                break
        else:
            raise RunInProgress(f"{self.store.url(LEASE)}: another runner is taking this run's lease at the same time")
        self.holder = mine
        self._version = self.store.read_versioned(LEASE)[1]

    def renew(self) -> None:
        assert self.holder is not None
        now = self.clock()
        renewed = Holder(**{**asdict(self.holder), "expires": now + self.ttl})
        if not self.store.replace_bytes(LEASE, self._record(renewed), self._version):
            raise LeaseLost(f"{self.store.url(LEASE)}: another runner took over this run; this one stops")
        self.holder = renewed
        self._version = self.store.read_versioned(LEASE)[1]

    def release(self) -> None:
        if self.holder is None:
            return
        try:
            data, version = self.store.read_versioned(LEASE)
            current = _parse(data)
            if current is not None and current.token == self.holder.token:
                self.store.delete(LEASE)
        except (ObjectNotFound, SelftaughtError) as error:  # the next runner takes over after expiry
            log.warning("could not release the lease: %s", error)
        self.holder = None

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LeaseLost as error:
                self.lost = error
                return
            except SelftaughtError as error:  # storage hiccup: try again; the lease outlives a few misses
                log.warning("could not renew the lease: %s", error)
                if self.holder is not None and self.clock() >= self.holder.expires:
                    self.lost = LeaseLost(f"{self.store.url(LEASE)}: the lease expired while storage was unreachable ({error})")
                    return

    def __enter__(self) -> Lease:
        self.acquire()
        self._thread = threading.Thread(target=self._renew_until_stopped, name="selftaught-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.release()
