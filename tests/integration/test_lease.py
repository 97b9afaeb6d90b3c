"""The run's lease, on a folder and on S3 over HTTP: one holder, a clear refusal, a takeover
only of a lease whose holder is gone, and a holder that learns when it lost the lease."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it_lost(store):
    clock = Clock()
    old = Lease(store, ttl=60, clock=clock)
    old.acquire()
    clock.now += 30
    old.renew()  # in time: still its own
    clock.now += 61
    new = Lease(store, ttl=60, clock=clock)
    new.acquire()  # expired (a holder on another host would be taken over exactly like this)
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
