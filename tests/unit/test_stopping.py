"""A stage process asked to stop (SIGTERM: a pod deleted or drained, a spot node reclaimed, Ctrl-C
through the local runner) ends as Disrupted: at once outside a trainer's loop, at the trainer's
next step end inside it. The local runner waits for it, unless Ctrl-C is pressed again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import yaml

from selftaught.errors import EXIT_RETRYABLE, TERMINATION_MESSAGE_VARIABLE, Reason, decode
from selftaught.local import subprocesses
from selftaught.stage_process import StopSignal

RUN = {
    "apiVersion": "selftaught.dev/v1alpha1",
    "kind": "SelfTaughtRun",
    "metadata": {"name": "r1"},
    "spec": {"models": {"seed": {"source": "m"}}, "data": {"instructions": {"source": "s3://b/i.jsonl"}}, "storage": {"uri": "s3://b/runs"}},
}


def test_sigterm_ends_a_generation_stage_at_once_as_disrupted_which_is_retried(tmp_path, monkeypatch):
    from selftaught import stage_process as process

    monkeypatch.setattr(process, "die_with_parent", lambda: None)  # not the test process's parent-death signal
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setenv(TERMINATION_MESSAGE_VARIABLE, str(tmp_path / "termination-log"))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(RUN))

    def generating(run, ref, shards, stop):
        os.kill(os.getpid(), signal.SIGTERM)  # the pod is deleted while vLLM generates
        time.sleep(60)

    monkeypatch.setattr(process, "run_stage", generating)
    before, started = signal.getsignal(signal.SIGTERM), time.monotonic()
    assert process.main("judge", 1, None, str(tmp_path / "run.yaml")) == EXIT_RETRYABLE
    assert time.monotonic() - started < 30  # not after the call it interrupted
    told = decode((tmp_path / "termination-log").read_text())
    assert told.reason == Reason.DISRUPTED and not told.permanent
    assert told.message.startswith("stopped by SIGTERM: judge-1 ends here")
    assert signal.getsignal(signal.SIGTERM) is before


def test_in_a_trainers_loop_a_sigterm_waits_for_its_step_end_and_only_the_first_counts():
    stop = StopSignal()
    with stop.installed():
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # torchrun forwards the SIGTERM the runner sent its worker too
            assert stop.requested() and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # after the loop (saving the model): no second request
    assert stop.requested()


def test_the_runner_waits_for_a_stage_that_saves_but_a_second_ctrl_c_stops_it_at_once():
    saving = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE,
    )
    saving.stdout.readline()  # its handler is in place
    started = time.monotonic()
    with subprocesses.shielded() as hurry:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C again, while the runner waits
        subprocesses.stop_trees([saving], grace=subprocesses.TRAINING_STOP_GRACE_SECONDS, hurry=hurry)
    assert saving.poll() is not None and time.monotonic() - started < 30  # killed, not waited for
    saving.stdout.close()
