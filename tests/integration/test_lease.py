"""The run's lease, on a folder and on S3 over HTTP: one holder, a clear refusal, a takeover
only of a lease whose holder is gone, and a holder that learns when it lost the lease."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from selftaught.local.lease import Lease, LeaseLost, RunInProgress
from selftaught.store import LocalStore, open_store
from selftaught.store.layout import LEASE


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "run")
    return open_store(f"{request.getfixturevalue('bucket')}/ns/run", endpoint=request.getfixturevalue("s3_server"))


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_a_second_holder_is_refused_with_the_holders_pid_and_host_until_release(store):
    first = Lease(store)
    first.acquire()
    with pytest.raises(RunInProgress, match=r"already running in process \d+ on host .*expires in \d+ s") as refused:
        Lease(store).acquire()
    assert refused.value.reason == "RunInProgress"
    first.release()
    assert not store.exists(LEASE)
    second = Lease(store)
    second.acquire()  # free again
    second.release()


def _as_if_held_on(store, host):
    """The lease as if its holder ran on `host` (whose processes this one cannot see)."""
    record = json.loads(store.read_bytes(LEASE))
    store.write_bytes(LEASE, json.dumps({**record, "host": host}).encode())


def test_an_expired_lease_of_another_host_is_taken_over_and_its_old_holder_learns_it_lost(store):
    clock = Clock()
    old = Lease(store, ttl=60, clock=clock)
    old.acquire()
    clock.now += 30
    old.renew()  # in time: still its own
    _as_if_held_on(store, "elsewhere")
    old._version = store.read_versioned(LEASE)[1]
    clock.now += 61
    new = Lease(store, ttl=60, clock=clock)
    new.acquire()  # expired, and its process cannot be seen from here
    with pytest.raises(LeaseLost, match="another runner took over"):
        old.renew()
    old.release()  # not its lease any more: leaves the new holder's alone
    assert json.loads(store.read_bytes(LEASE))["token"] == new.holder.token


def test_a_lease_whose_holder_process_is_gone_is_taken_over_at_once(store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    holder = Lease(store)
    holder.acquire()  # then make it look like it was held by a process that has exited
    record = json.loads(store.read_bytes(LEASE))
    store.write_bytes(LEASE, json.dumps({**record, "pid": int(dead.stdout)}).encode())
    taker = Lease(store)
    taker.acquire()  # not expired, but its process is gone
    assert json.loads(store.read_bytes(LEASE))["token"] == taker.holder.token


def test_an_unreadable_lease_does_not_lock_a_run_out_forever(store):
    store.write_bytes(LEASE, b"not json")
    lease = Lease(store)
    lease.acquire()
    assert json.loads(store.read_bytes(LEASE))["pid"] == lease.holder.pid


def test_on_its_own_host_a_lease_is_never_taken_from_a_live_process_even_expired(store):
    clock = Clock()
    holder = Lease(store, ttl=60, clock=clock)
    holder.acquire()
    clock.now += 3600  # a runner whose renewals stopped (a suspended laptop, a stuck thread): its process lives
    with pytest.raises(RunInProgress, match=r"already running in process \d+ on host .*its lease expired 3540 s ago, but the process lives"):
        Lease(store, ttl=60, clock=clock).acquire()
    holder.renew()  # and it is still its own
    holder.release()


def test_a_runner_stopped_with_ctrl_z_is_named_as_such_and_keeps_its_lease(store):
    stopped = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(stopped.pid, signal.SIGSTOP)
        record = {"token": "t", "host": socket.gethostname(), "pid": stopped.pid, "started": psutil.Process(stopped.pid).create_time(), "acquired": 0.0, "expires": 1.0}
        store.write_bytes(LEASE, json.dumps(record).encode())  # expired long ago: it renews nothing while stopped
        with pytest.raises(RunInProgress) as refused:
            Lease(store).acquire()
        assert f"this run is stopped (Ctrl-Z) in process {stopped.pid} on this host" in str(refused.value)
        assert f"`fg` it or end it (`kill {stopped.pid}; kill -CONT {stopped.pid}`" in str(refused.value)
        assert json.loads(store.read_bytes(LEASE))["token"] == "t"
    finally:
        stopped.kill()
        stopped.wait()
