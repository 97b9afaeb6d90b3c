"""A controller's control loop in a thread of its own, as every controller of the cluster runs one: observe,
act, wait ``poll_interval`` (or less, when woken), again, until stopped.

A cycle that raises is logged and kept in ``errors``, and the loop goes on — a test may be about to delete
what broke it — and :meth:`ControlLoop.check` raises it where a test waits; :meth:`ControlLoop.stop` ends the
loop after the cycle in flight and joins its thread.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Self

__all__ = ['ControlLoop']

logger = logging.getLogger(__name__)


class ControlLoop:
    """Start, stop and wake a loop that calls :meth:`_cycle` every ``poll_interval`` seconds in its own thread.

    A subclass does one pass in :meth:`_cycle`, and may prepare in :meth:`_starting` (before the thread starts),
    clean up in :meth:`_shutdown` (in the thread, as it ends) and in :meth:`_stopped` (once it is joined), and
    wrap each cycle by overriding :meth:`_step` (which calls :meth:`_run_cycle`).
    """

    name = 'the control loop'  # for messages: "<name> is already started", "<name> failed a cycle"
    thread_name = 'fake-control-loop'
    join_timeout = 30.0  # seconds stop() waits for the thread

    def __init__(self, *, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.errors: list[BaseException] = []  # what failed cycles raised (a harness bug, or the API), oldest first
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f'{self.name} is already started')
        self._starting()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the loop after the cycle in flight and join its thread. Idempotent."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wakeup.set()
        self._thread.join(timeout=self.join_timeout)
        if self._thread.is_alive():
            logger.warning('%s did not stop within %s s', self.name, self.join_timeout)
        self._thread = None
        self._stopped()

    def wake(self) -> None:
        """Run the next cycle now, rather than once ``poll_interval`` has passed."""
        self._wakeup.set()

    def check(self) -> None:
        """Raise if a cycle has failed (the newest error as the cause)."""
        if self.errors:
            raise RuntimeError(f'{self.name} loop failed') from self.errors[-1]

    # ---- for subclasses -------------------------------------------------------------------------------------------

    def _cycle(self) -> Any:
        """One pass of the loop; what it returns goes to :meth:`_step`."""
        raise NotImplementedError

    def _starting(self) -> None:
        """Called by :meth:`start` before the thread starts."""

    def _shutdown(self) -> None:
        """Called in the loop's thread as it ends."""

    def _stopped(self) -> None:
        """Called by :meth:`stop` once the thread is joined."""

    def _step(self) -> None:
        self._run_cycle()

    def _run_cycle(self) -> tuple[Any, Exception | None]:
        """One cycle: what it returned, or the exception it raised (logged and kept in ``errors``)."""
        try:
            return self._cycle(), None
        except Exception as e:  # keep going: a test may be about to delete what broke it
            logger.exception('%s failed a cycle', self.name)
            self.errors.append(e)
            return None, e

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()
                self._step()
                if not self._stopping.is_set():
                    self._wakeup.wait(self.poll_interval)
        finally:
            self._shutdown()
