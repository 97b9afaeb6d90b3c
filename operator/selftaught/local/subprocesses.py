"""Stage processes that never outlive the runner that started them, and that pause with it.

torchrun starts its workers in new sessions, so neither a signal to the runner's process group
nor one to the stage's reaches them. The runner therefore stops the whole *tree* (found by
parentage, not by group), and each stage process asks the kernel to be sent SIGTERM when its
parent dies (Linux's parent-death signal, `pipeline/launch.py`), which covers a runner killed with
SIGKILL. For the same reason the terminal's Ctrl-Z (SIGTSTP) stops only the runner: `job_control`
stops the trees first, and continues them when the runner is continued (`fg`, `bg`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import psutil

from selftaught.pipeline.launch import die_with_parent

log = logging.getLogger(__name__)
#: how long a stage may take to stop on SIGTERM before it is killed
STOP_GRACE_SECONDS = 20.0
#: a train stage's: it saves its full state at its next step end and uploads it before it exits
#: (`engines/checkpointing.py`), which a large model's steps and state take minutes to do
TRAINING_STOP_GRACE_SECONDS = 300.0


#: the stage processes this runner started that may still run: what job control pauses
_started: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


def start(command: list[str], **popen: object) -> subprocess.Popen:
    """Start a stage process in its own session (a Ctrl-C on the terminal is the runner's to
    forward), set to die with the runner."""
    process = subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent, **popen)
    _started.add(process)
    return process


def _signal_trees(signum: int) -> None:
    """`signum` to every process of every stage tree still running."""
    for process in list(_started):
        if process.poll() is not None:
            continue
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(process.pid)
            for member in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    member.send_signal(signum)


def job_control() -> contextlib.AbstractContextManager[None]:
    """Within the block, Ctrl-Z (SIGTSTP) pauses the stage trees, then this process, as a shell
    pauses a job; `fg` or `bg` (SIGCONT) continues the trees with it. The trees are paused with
    SIGSTOP: they run in sessions of their own, where a SIGTSTP is discarded (an orphaned process
    group), and a stage must not be able to decline."""

    def pause(signum: int, frame: object) -> None:
        _signal_trees(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until continued
        finally:
            signal.signal(signal.SIGTSTP, pause)
            _signal_trees(signal.SIGCONT)

    def resume(signum: int, frame: object) -> None:  # continued by someone else's SIGCONT: the trees too
        _signal_trees(signal.SIGCONT)

    stack = contextlib.ExitStack()
    stack.enter_context(_handling((signal.SIGTSTP,), pause))
    stack.enter_context(_handling((signal.SIGCONT,), resume))
    return stack


def stop_tree(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to the process and every descendant, SIGKILL to what is left after `grace`."""
    stop_trees([process], grace)


def stop_trees(processes: list[subprocess.Popen], grace: float = STOP_GRACE_SECONDS, hurry: threading.Event | None = None) -> None:
    """`stop_tree` for several stage processes at once (shards on their GPUs): all are told to
    stop first, so the grace period is spent once, not once per process. Once `hurry` is set
    (a second Ctrl-C), what is left is killed without waiting out the grace."""
    tree = []
    for process in processes:
        try:
            root = psutil.Process(process.pid)
            tree += [root, *root.children(recursive=True)]  # collected first: a dying parent orphans its children
        except psutil.NoSuchProcess:
            pass
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.terminate()
    deadline, alive = time.monotonic() + grace, tree
    while alive and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        _, alive = psutil.wait_procs(alive, timeout=min(0.2, max(deadline - time.monotonic(), 0.0)))
    hurried = hurry is not None and hurry.is_set()
    for member in alive:
        log.warning("stage process %d %s: killing it", member.pid, "is asked again" if hurried else f"did not stop within {grace:.0f} s")
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


@contextlib.contextmanager
def _handling(signals: tuple[int, ...], handler: Callable[[int, object], None] | int) -> Iterator[None]:
    """`handler` for `signals` within the block, the previous handlers after it. Outside the main
    thread (e.g. inside a test's worker) Python allows no handlers: signals are left alone."""
    previous = {}
    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def signals_raise(exception: Callable[[int], BaseException]) -> contextlib.AbstractContextManager[None]:
    """Within the block, SIGTERM and SIGHUP raise `exception(signum)` in the main thread (as
    Ctrl-C raises KeyboardInterrupt), so a runner stopped by systemd or a closed terminal
    cleans up like one stopped with Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise exception(signum)

    return _handling((signal.SIGTERM, signal.SIGHUP), handler)


@contextlib.contextmanager
def shielded() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM/SIGHUP raise nothing while the runner cleans up after an interruption: a
    second Ctrl-C must not cut the cleanup short and leave stage processes behind. It sets the
    event instead, which `stop_trees` takes as: kill now, do not wait for a checkpoint."""
    hurry = threading.Event()
    with _handling((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), lambda signum, frame: hurry.set()):
        yield hurry
