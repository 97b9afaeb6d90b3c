"""Shared fixtures: a tiny seed model built once per session, S3 on loopback (moto's server,
real HTTP), and a factory for runs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


#: what a session fixture's one-time build may take, apart from the test that first asks for it
BUILD_BUDGET_SECONDS = 1800


@contextlib.contextmanager
def own_time_budget(seconds: float = BUILD_BUDGET_SECONDS) -> Iterator[None]:
    """Run a session fixture's one-time build on a budget of its own, not on the time of the
    test that happens to ask first: pytest-timeout's timer (its signal method, ITIMER_REAL) is
    set to `seconds` for the build and given back what the test had left after it. A 40 s build
    on idle cores took over 600 s on a loaded machine and failed every test that used it."""
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    if left:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if left:
            signal.setitimer(signal.ITIMER_REAL, left)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The quickstart's seed: a 2-layer Llama that writes every stage's format."""
    from selftaught.dev.tiny_model import build_tiny_model, read_instructions

    cached = os.environ.get("SELFTAUGHT_TEST_MODEL")
    if cached and (Path(cached) / "config.json").is_file():
        return Path(cached)
    output = tmp_path_factory.mktemp("models") / "tiny-judge"
    with own_time_budget():
        return build_tiny_model(output, read_instructions(REPO / "examples/data/instructions.jsonl"), log=lambda _: None)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 endpoint over HTTP on 127.0.0.1: moto's server, in its own process (its Flask
    proxies must not live in the test process, where importing vLLM scans every module)."""
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def bucket(s3_server, request) -> str:
    """A fresh bucket per test: `s3://<bucket>`."""
    import boto3

    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50].strip("-")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return f"s3://{name}"


QUICK_SPEC: dict[str, Any] = {
    "generation": {"enforceEager": True, "maxModelLen": 2048},
    "categorize": {"maxTokens": 24},
    "select": {"minComplexity": 2},
    "pairs": {"maxTokens": 96},
    "judge": {"samples": 4, "maxTokens": 24},
    "train": {
        "zeroStage": 2, "gpusPerNode": 1, "learningRate": 1e-4, "warmupSteps": 0, "epochs": 1,
        "microBatchSize": 4, "gradientAccumulation": 1, "maxSeqLen": 1024, "bf16": False,
        "gradientCheckpointing": False,
    },
    "evaluate": {"maxTokens": 24},
}  # fmt: skip


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


@pytest.fixture
def make_run(tiny_model, tmp_path) -> Callable[..., Any]:
    """A SelfTaughtRun on the tiny model; keyword overrides are merged into the spec."""
    from selftaught.api.load import parse_run

    def factory(name: str = "test", storage: str | None = None, endpoint: str | None = None, **spec: Any):
        document = {
            "apiVersion": "selftaught.dev/v1alpha1",
            "kind": "SelfTaughtRun",
            "metadata": {"name": name, "namespace": "tests"},
            "spec": _merge(
                {
                    **QUICK_SPEC,
                    "models": {"seed": {"source": str(tiny_model)}},
                    "data": {
                        "instructions": {"source": str(REPO / "examples/data/instructions.jsonl")},
                        "evaluation": {"heldOutFraction": 0.2},
                    },
                    "storage": {"uri": storage or str(tmp_path / "store"), **({"endpoint": endpoint} if endpoint else {})},
                    "iterations": 1,
                },
                spec,
            ),
        }
        return parse_run(document)

    return factory


@pytest.fixture(scope="session")
def untrained_model(tmp_path_factory) -> Path:
    """Same shapes and tokenizer as the tiny model, random weights: it never writes a verdict."""
    from selftaught.dev.tiny_model import build_tiny_model, read_instructions

    output = tmp_path_factory.mktemp("models") / "untrained"
    with own_time_budget():
        return build_tiny_model(output, read_instructions(REPO / "examples/data/instructions.jsonl"), steps=0, log=lambda _: None)
