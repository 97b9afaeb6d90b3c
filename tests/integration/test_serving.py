"""`selftaught serve` and `selftaught judge` for real, as the README shows them: vLLM's CPU build
serves the checkpoint of a finished run (the tiny model, which has learned the judge's format),
and the client gets verdicts from it. About 55 s on 2 busy cores, nearly all of it the server's
start (the tiny model has learned the verdict's format, not judging: it answers [[B]] to
everything, so its verdicts flip with the order). Slow (`pytest -m slow`): CI runs the same
server and client through the operator (tests/operator/test_serving.py), and what `serve RUN.yaml`
chooses in tests/unit/test_serving.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from selftaught.cli import main
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import Manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 300


def finished_iteration(store, iteration: int, checkpoint: str, overall: float) -> None:
    """The manifests a run leaves when iteration `iteration` was trained and evaluated."""
    write_manifest(store, StageRef("train", iteration).manifest_key, Manifest(stage="train", iteration=iteration, summary={"checkpoint": checkpoint}))
    evaluated = Manifest(stage="evaluate", iteration=iteration, summary={"benchmark": "rewardbench", "accuracy": overall, "overall": overall})
    write_manifest(store, StageRef("evaluate", iteration).manifest_key, evaluated)


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the server did not answer /health within {STARTUP_SECONDS}s:\n{log.read_text()[-4000:]}")


@pytest.mark.slow
def test_a_served_checkpoint_of_a_finished_run_answers_the_judge_client(make_run, tiny_model, tmp_path, capsys):
    run = make_run(name="served", storage=str(tmp_path / "store"), iterations=2)
    store = open_run_store(run)
    finished_iteration(store, 1, str(tmp_path / "worse-checkpoint"), overall=0.4)  # never fetched: not chosen
    finished_iteration(store, 2, str(tiny_model), overall=0.8)  # the best: this one is served
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"id": "sum", "instruction": "What is 12 times 12?", "response_a": "12 times 12 is 144.", "response_b": "12 times 12 is 124."})
        + "\n"
        + json.dumps({"id": "capital", "instruction": "What is the capital of France?", "response_a": "Lyon.", "response_b": "Paris."})
        + "\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "OMP_NUM_THREADS": "1", "SELFTAUGHT_CACHE": str(tmp_path / "cache")}
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "selftaught", "serve", str(run_file), "--port", str(port)],
            cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server, log)
        with pytest.raises(SystemExit) as ended:
            main(["judge", "--endpoint", f"{url}/v1", "--max-tokens", "24", str(pairs)])
        out, err = capsys.readouterr()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert ended.value.code == 0, err
    said = log.read_text()
    assert f"serving iteration 2 of run served ({tiny_model})" in said and f"at http://127.0.0.1:{port}/v1" in said
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in results] == ["sum", "capital"]
    for result in results:  # the format it learned: a verdict in each order, read back in the pair's letters
        assert all(v in ("A", "B") for v in result["verdicts"]) and len(result["reasoning"]) == 2, result
        first, second = result["verdicts"]
        assert result["consistent"] == (first == second) and result["verdict"] == (first if first == second else None)
    assert "judged 2 pairs" in err
