"""The control loop the cluster's controllers run on: cycles every interval or when woken, failures kept and
raised where a test looks, the thread joined on stop."""
from __future__ import annotations

import threading
import time

import pytest

from .control_loop import ControlLoop


class Counter(ControlLoop):
    name = 'the counter'

    def __init__(self, poll_interval: float = 60.0, fail_at: int | None = None) -> None:
        super().__init__(poll_interval=poll_interval)
        self.cycles = 0
        self.fail_at = fail_at
        self.events: list[str] = []
        self.ran = threading.Event()

    def _starting(self) -> None:
        self.events.append('starting')

    def _cycle(self) -> int:
        self.cycles += 1
        self.ran.set()
        if self.cycles == self.fail_at:
            raise ValueError('broken')
        return self.cycles

    def _shutdown(self) -> None:
        self.events.append('shutdown')

    def _stopped(self) -> None:
        self.events.append('stopped')


def test_it_cycles_when_woken_and_stops_with_its_thread_joined() -> None:
    with Counter() as loop:
        assert loop.ran.wait(5)
        thread = loop._thread
        loop.ran.clear()
        loop.wake()  # the interval is a minute: only waking runs the next cycle now
        assert loop.ran.wait(5) and loop.cycles >= 2
        with pytest.raises(RuntimeError, match='the counter is already started'):
            loop.start()
    assert thread is not None and not thread.is_alive()
    assert loop.events == ['starting', 'shutdown', 'stopped']
    loop.stop()  # idempotent
    assert loop.events == ['starting', 'shutdown', 'stopped']


def test_a_failed_cycle_is_kept_and_raised_where_a_test_looks_and_the_loop_goes_on() -> None:
    with Counter(poll_interval=0.01, fail_at=2) as loop:
        deadline = time.monotonic() + 5
        while loop.cycles < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert loop.cycles >= 4  # it went on
    assert [str(e) for e in loop.errors] == ['broken']
    with pytest.raises(RuntimeError, match='the counter loop failed') as failed:
        loop.check()
    assert isinstance(failed.value.__cause__, ValueError)
