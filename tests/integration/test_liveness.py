"""Nothing waits without saying why, and the terminal's job control does what a user expects.

- A store that accepts connections and never answers (a proxy that swallows requests, a wedged
  MinIO): the first call that waits says what it waits for, and the command ends within the run's
  `storage.timeoutSeconds` with one sentence naming the endpoint.
- Ctrl-Z pauses the runner *and* its stages; a second `selftaught run` meanwhile is refused (the
  holder is stopped, not gone), and `fg` continues both.
- Ctrl-C in `plan` or `status` is one line and exit code 130, never a traceback.

Every case runs the real command; none loads a model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import REPO

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts every connection and never answers a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def write_run(folder: Path, storage: dict, instructions: str = str(REPO / "examples/data/instructions.jsonl")) -> Path:
    document = {
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "live", "namespace": "tests"},
        "spec": {"models": {"seed": {"source": str(folder / "no-model")}}, "data": {"instructions": {"source": instructions}}, "storage": storage},
    }  # fmt: skip
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def start(*args: object) -> subprocess.Popen:
    """The command as a shell starts a job: in a process group of its own (signals below go to it
    alone) in this session (where a stop signal stops it: a group without a parent in its session
    is orphaned, and the kernel discards a SIGTSTP sent to one)."""
    return subprocess.Popen(
        [sys.executable, "-m", "selftaught", *map(str, args)], cwd=REPO, env={**os.environ, **ENV},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0,
        preexec_fn=_terminal_signals,
    )  # fmt: skip


def _terminal_signals() -> None:
    """A job a terminal starts gets SIGINT as it comes: an ignored SIGINT is inherited across exec, and an
    earlier test in this process may have left it ignored (Python then installs no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_line(process: subprocess.Popen, needle: str, timeout: float = 60) -> str:
    """The first line of the command's stderr that holds `needle` (the lines before it are read too)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"never said {needle!r}: {''.join(seen)}")


def test_a_store_that_never_answers_is_said_at_once_and_given_up_on_in_its_time(tmp_path, silent_endpoint):
    run = write_run(tmp_path, {"uri": "s3://bucket/runs", "endpoint": silent_endpoint, "timeoutSeconds": 10})
    started = time.monotonic()
    runner = start("run", run)
    stdout, stderr = runner.communicate(timeout=60)
    seconds = time.monotonic() - started
    assert runner.returncode == 1, stderr  # transient: the store may answer later
    assert "Traceback" not in stderr
    waited = [line for line in stderr.splitlines() if "waiting" in line]
    assert waited and f"waiting 5 s for the store at {silent_endpoint} (PutObject s3://bucket/runs/tests/live/lease.json)" in waited[0], stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: s3://bucket/runs/tests/live/lease.json: the store at {silent_endpoint} did not answer within storage.timeoutSeconds "
        "(10 s, retries included): check that it is up and that nothing on the way swallows requests"
    )
    assert seconds < 20, seconds


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _stopped(process: psutil.Process) -> bool:
    return process.status() == psutil.STATUS_STOPPED


def test_ctrl_z_pauses_the_stages_too_and_a_second_runner_leaves_the_stopped_one_alone(tmp_path, silent_endpoint):
    # the first stage waits on its data (an s3:// source that never answers): alive, doing nothing
    storage = {"uri": str(tmp_path / "store"), "sourceEndpoint": silent_endpoint, "timeoutSeconds": 600}
    run = write_run(tmp_path, storage, instructions="s3://data/instructions.jsonl")
    runner = start("run", run)
    root = psutil.Process(runner.pid)
    _until(lambda: any("stage" in " ".join(p.cmdline()) for p in root.children(recursive=True) if _alive(p)))
    stages = root.children(recursive=True)

    os.kill(runner.pid, signal.SIGTSTP)  # Ctrl-Z
    _until(lambda: _stopped(root) and all(_stopped(p) for p in stages if _alive(p)))

    lease = tmp_path / "store/tests/live/lease.json"
    held = lease.read_bytes()
    record = json.loads(held)
    lease.write_text(json.dumps({**record, "expires": record["expires"] - 3600}))  # renewed by nobody while stopped: long expired
    second = subprocess.run([sys.executable, "-m", "selftaught", "run", str(run)], cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"this run is stopped (Ctrl-Z) in process {runner.pid} on this host" in second.stderr
    assert f"`fg` it or end it (`kill {runner.pid}; kill -CONT {runner.pid}`" in second.stderr
    lease.write_bytes(held)  # as the runner left it, so it renews it when continued
    assert all(_stopped(p) for p in stages if _alive(p))  # nobody took the stage over meanwhile

    os.kill(runner.pid, signal.SIGCONT)  # fg
    _until(lambda: not _stopped(root) and not any(_stopped(p) for p in stages if _alive(p)))
    os.kill(runner.pid, signal.SIGTSTP)  # stopped again, then ended as the refusal says: `kill N; kill -CONT N`
    _until(lambda: _stopped(root))
    os.kill(runner.pid, signal.SIGTERM)
    os.kill(runner.pid, signal.SIGCONT)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 143 and stderr.strip().splitlines()[-1] == "interrupted; run the same command to resume", stderr
    _until(lambda: not any(_alive(p) for p in stages))


def test_ctrl_c_in_status_while_the_store_keeps_it_waiting_is_one_line(tmp_path, silent_endpoint):
    run = write_run(tmp_path, {"uri": "s3://bucket/runs", "endpoint": silent_endpoint, "timeoutSeconds": 600})
    status = start("status", run)
    wait_for_line(status, f"for the store at {silent_endpoint} (GetObject s3://bucket/runs/tests/live/run.json)")
    status.send_signal(signal.SIGINT)
    _, stderr = status.communicate(timeout=30)
    assert status.returncode == 130 and stderr.strip() == "interrupted", stderr


def _waits_on_a_pipe(pid: int) -> bool:
    """Whether the process is blocked opening a named pipe (Linux's wait channel says so)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() in {"wait_for_partner", "fifo_open"}
    except OSError:
        return False


def test_ctrl_c_in_plan_is_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.mkfifo(data / "instructions.jsonl")  # counting its records waits for a writer that never comes
    (tmp_path / "no-model").mkdir()  # plan checks the seed's path before it counts the instructions
    (tmp_path / "no-model" / "config.json").write_text("{}")
    plan = start("plan", write_run(tmp_path, {"uri": str(tmp_path / "store")}, instructions=str(data)))
    _until(lambda: plan.poll() is not None or _waits_on_a_pipe(plan.pid))
    assert plan.poll() is None, plan.communicate()
    plan.send_signal(signal.SIGINT)
    _, stderr = plan.communicate(timeout=30)
    assert plan.returncode == 130 and stderr.strip() == "interrupted", stderr
