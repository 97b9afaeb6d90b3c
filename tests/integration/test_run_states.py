"""`selftaught status` says where a local run stands, as a newcomer needs it: a run that failed is
failed (its reason, its message, its log in the store, exit 1), one that nobody runs is "not
running", and `--watch` stops on success, failure or a runner that is gone. A manifest means the
same run from whichever folder it is given."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
import uuid

import psutil
import yaml

from selftaught.local.lease import Holder
from selftaught.pipeline.runstore import accept
from selftaught.store import open_store
from selftaught.store.failures import read_failure
from selftaught.store.layout import LEASE
from tests.conftest import REPO

from .test_cli_views import halfway, selftaught
from .test_report import finished_run


def hold_lease(store, pid: int) -> None:
    """The run's lease as `selftaught run` in process `pid` holds it."""
    now = time.time()
    holder = Holder(uuid.uuid4().hex, socket.gethostname(), pid, psutil.Process(pid).create_time(), now, now + 60)
    store.write_bytes(LEASE, json.dumps(dataclasses.asdict(holder)).encode())


def test_a_run_that_failed_at_categorize_is_failed_with_its_reason_and_log_from_any_folder(tmp_path, tiny_model):
    project = tmp_path / "project"
    project.mkdir()
    (project / "instructions.jsonl").write_text('{"instruction": "What is 2 + 2?"}\nnot json\n')
    manifest = project / "run.yaml"
    manifest.write_text(
        yaml.safe_dump({
            "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "quickstart", "namespace": "local"},
            "spec": {"models": {"seed": {"source": str(tiny_model)}}, "data": {"instructions": {"source": "instructions.jsonl"}},
                     "storage": {"uri": "runs"}, "iterations": 1},
        })  # fmt: skip
    )
    run = selftaught("run", "project/run.yaml", cwd=tmp_path)  # paths are the manifest's folder's, not tmp_path's
    assert run.returncode != 0 and "run categorize failed, reason InvalidInput" in run.stderr, run.stdout + run.stderr
    store = open_store(str(project / "runs/local/quickstart"))
    [failure_key] = store.list("categorize/_failures/")
    failure = read_failure(store, failure_key)
    assert failure.reason == "InvalidInput" and f"{project / 'instructions.jsonl'}:2" in failure.message and failure.permanent
    assert failure.log.startswith("categorize/_logs/") and "malformed JSONL line" in store.read_text(failure.log)  # the log outlives the runner's temp folder

    status = selftaught("status", manifest, cwd=REPO)  # from another folder: the same store
    assert status.returncode == 1, status.stdout + status.stderr
    out = status.stdout
    assert f"failed: categorize, reason InvalidInput: {failure.message}" in out
    assert f"log: {store.url(failure.log)}" in out and f"fix what it says, then selftaught run {manifest} to resume" in out
    assert "✗ categorize   failed, reason InvalidInput" in out and "started" not in out

    started = time.monotonic()
    watch = selftaught("status", "--watch", store.uri)  # nothing to wait for: it ends at once
    assert watch.returncode == 1 and time.monotonic() - started < 30 and "failed: categorize" in watch.stdout


def test_a_run_nobody_runs_is_not_running_and_watch_does_not_wait_for_it(tmp_path):
    run, store = halfway(tmp_path)  # stopped in judge-1, and no runner holds its lease
    status = selftaught("status", store.uri)
    assert status.returncode == 0, status.stderr
    assert "not running: no selftaught run holds its lease; selftaught run RUN.yaml to start or resume it" in status.stdout
    assert "‖ judge-1      stopped at 66.7% (400/600 samples, 1/2 shards)" in status.stdout and "ETA" not in status.stdout

    watch = selftaught("status", "--watch", store.uri)
    assert watch.returncode == 1 and "not running" in watch.stdout


def test_watch_follows_a_live_runner_and_ends_when_it_is_gone(tmp_path):
    run, store = halfway(tmp_path)
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for `selftaught run`
    try:
        hold_lease(store, runner.pid)
        status = selftaught("status", store.uri)
        assert status.returncode == 0 and f"running: selftaught run, process {runner.pid} on host {socket.gethostname()}" in status.stdout
        assert "… judge-1      66.7%" in status.stdout
        watch = subprocess.Popen(
            [sys.executable, "-m", "selftaught", "status", "--watch", "--interval", "0.2", store.uri], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        time.sleep(4)
        assert watch.poll() is None, "--watch stopped while the runner was alive"
        runner.kill()  # killed: its lease stays behind, naming a process that is gone
        runner.wait()
        output, _ = watch.communicate(timeout=30)
        assert watch.returncode == 1
        assert f"not running: no selftaught run holds its lease (its last runner, process {runner.pid} on host {socket.gethostname()}, is gone)" in output
    finally:
        runner.kill()


def test_watch_of_a_run_that_succeeded_ends_at_once_with_exit_0(tmp_path):
    run, store = finished_run(tmp_path)
    accept(store, run)
    watch = selftaught("status", "--watch", store.uri)
    assert watch.returncode == 0 and "run local/quickstart: 10 of 10 stages done" in watch.stdout and "not running" not in watch.stdout
