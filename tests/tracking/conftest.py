"""A real MLflow tracking server (SQLite backend, artifacts served by it, on 127.0.0.1), started
once per session — it takes 10-20 s — and stoppable by a test, and local runs whose stages are the
operator tests' fakes (tests/operator/fake_stage.py): each writes its stage's manifest at once and
then does what a real stage process does after publishing (the report, the tracking sync), so a
whole run takes seconds and what is real is everything this suite is about: the clients, the
server, the store."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_STAGE = REPO / "tests" / "operator" / "fake_stage.py"


class MlflowServer:
    """`mlflow server` in its own process; `stop()` and `start()` again on the same port and
    database, as a server that goes down and comes back."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.folder = folder
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination", str(self.folder / "artifacts"),
        ]  # fmt: skip
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"mlflow server did not start: {(self.folder / 'server.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    pytest.importorskip("mlflow", reason="the tracking extra (pip install 'selftaught[tracking]')")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_mlflow(mlflow_server) -> MlflowServer:
    """The session's server, running (a test that stopped it may have left it down)."""
    if mlflow_server.process is None:
        mlflow_server.start()
    return mlflow_server


@pytest.fixture
def fake_stage_runs(monkeypatch):
    """`selftaught run` (the local runner, in this process) starting the fake stage for every stage."""
    from selftaught.local import runner

    def command(spec, ref, **_):
        return [sys.executable, str(FAKE_STAGE), "stage", ref.name, f"--iteration={ref.iteration}"]

    monkeypatch.setattr(runner, "stage_command", command)
    monkeypatch.setenv("PYTHONPATH", str(REPO / "operator"))
    return runner.run_local


@pytest.fixture
def make_fake_run(tmp_path):
    """A quickstart-sized SelfTaughtRun for the fake stages, which load no model: its seed is a Hub
    id that is never fetched (building the tiny model takes minutes on a busy machine)."""
    from selftaught.api.load import parse_run
    from tests.conftest import QUICK_SPEC, _merge

    def factory(name: str, storage: str, endpoint: str | None = None, **spec):
        document = {
            "apiVersion": "selftaught.dev/v1alpha1",
            "kind": "SelfTaughtRun",
            "metadata": {"name": name, "namespace": "tests"},
            "spec": _merge(
                {
                    **QUICK_SPEC,
                    "models": {"seed": {"source": "selftaught-tests/tiny-judge"}},
                    "data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}, "evaluation": {"heldOutFraction": 0.2}},
                    "storage": {"uri": storage, **({"endpoint": endpoint} if endpoint else {})},
                    "iterations": 2,
                },
                spec,
            ),
        }
        return parse_run(document)

    return factory
