"""Calling a judge over HTTP (`selftaught judge`, `selftaught score --endpoint`, the Python client)
against a small OpenAI-compatible server on 127.0.0.1 whose answers the test chooses: the
requests, the verdicts, the bad lines, the retries and a server that is down, without a model.
The same client against vLLM serving the tiny model: tests/integration/test_serving.py."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from selftaught.cli import main
from selftaught.client import JudgeClient, Pair, Pairwise
from selftaught.errors import EndpointUnavailable
from selftaught.method.judging import random_order

REPO = Path(__file__).resolve().parents[2]
RB_SAMPLE = REPO / "examples/data/rewardbench-sample.jsonl"
Answer = Callable[[list[dict]], str]


class Judge:
    """An OpenAI-compatible server (/v1/models, /v1/chat/completions) answering with `answer`;
    the first `failures` chat requests get a 503."""

    def __init__(self, answer: Answer, failures: int = 0):
        self.answer, self.failures, self.requests = answer, failures, []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake-judge", "object": "model", "created": 0, "owned_by": "test"}]})

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests.append(request)
                if judge.failures > 0:
                    judge.failures -= 1
                    self._send(503, {"message": "loading"})
                    return
                text = judge.answer(request["messages"])
                choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for i in range(request.get("n", 1))]
                usage = {"prompt_tokens": 10, "completion_tokens": 3 * len(choices), "total_tokens": 10 + 3 * len(choices)}
                self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": request["model"], "choices": choices, "usage": usage})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Judge:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def prefers(word: str) -> Answer:
    """A judge that picks the answer containing `word`, whatever its position."""

    def answer(messages: list[dict]) -> str:
        shown = messages[-1]["content"]
        a = shown.split("[The Start of Assistant A's Answer]")[1].split("[The End of Assistant A's Answer]")[0]
        return f"Assistant {'A' if word in a else 'B'} is right. [[{'A' if word in a else 'B'}]]"

    return answer


def always(letter: str) -> Answer:
    return lambda messages: f"I pick [[{letter}]]"


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    pairs = [
        {"id": "p1", "instruction": "What is 2 + 2?", "response_a": "4, right", "response_b": "5"},
        {"id": "p2", "instruction": "Capital of France?", "response_a": "Lyon", "response_b": "Paris, right"},
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        main(list(argv))
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_judge_gives_each_pair_its_verdict_consistency_and_reasoning_in_both_orders(capsys, pairs_file):
    with Judge(prefers("right")) as server:
        code, out, err = run_cli(capsys, "judge", "--endpoint", server.url, str(pairs_file))
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["verdict"], r["verdicts"], r["consistent"]) for r in results] == [("p1", "A", ["A", "A"], True), ("p2", "B", ["B", "B"], True)]
    assert results[0]["reasoning"] == ["Assistant A is right. [[A]]", "Assistant B is right. [[B]]"]  # as given, then swapped
    assert "judged 2 pairs: A 1, B 1, undecided 0; position consistent 2/2" in err
    # the judge's own prompt, greedy, each pair shown both ways, to the model the endpoint serves
    asked = [r for r in server.requests if "What is 2 + 2?" in r["messages"][1]["content"]]  # requests go out together
    assert all(r["model"] == "fake-judge" and r["temperature"] == 0.0 and r["messages"][0]["role"] == "system" for r in asked)
    shown_first = sorted(r["messages"][1]["content"].split("[The Start of Assistant A's Answer]\n")[1].split("\n")[0] for r in asked)
    assert shown_first == ["4, right", "5"]  # as given, and swapped


def test_a_judge_that_always_answers_a_is_undecided_and_never_consistent(pairs_file):
    with Judge(always("A")) as server:
        results = JudgeClient(server.url).judge_file(pairs_file)
        one_order = JudgeClient(server.url, format=Pairwise(orders="given")).judge([Pair("q", "x", "y", id="only")])
    assert [(r.verdict, r.consistent) for r in results] == [(None, False), (None, False)]
    assert (one_order[0].verdict, one_order[0].verdicts, one_order[0].consistent) == ("A", ["A"], None)


def test_bad_lines_are_named_by_file_and_line_before_anything_is_sent(capsys, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"instruction": "q", "response_a": "a", "response_b": "b"}\n{"instruction": \n\n{"instruction": "q", "response_a": "a"}\n[1]\n')
    with Judge(always("A")) as server:
        code, _, err = run_cli(capsys, "judge", "--endpoint", server.url, str(path))
    assert code == 2
    assert f"{path}:2: not JSON" in err and f"{path}:4: missing response_b" in err and f"{path}:5: not a JSON object" in err
    assert server.requests == []


def test_a_server_that_is_loading_is_retried_and_one_that_is_down_gives_a_clear_error(pairs_file):
    with Judge(prefers("right"), failures=2) as server:
        results = JudgeClient(server.url, concurrency=1).judge_file(pairs_file)
    assert [r.verdict for r in results] == ["A", "B"] and len(server.requests) == 4 + 2  # two 503s, retried

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EndpointUnavailable, match=rf"cannot reach the judge at http://127.0.0.1:{port}/v1 \(list its models, 2 tries\)"):
        JudgeClient(f"http://127.0.0.1:{port}/v1", retries=1).judge_file(pairs_file)


def test_score_with_an_endpoint_judges_a_benchmark_as_the_evaluate_stage_does(capsys, tmp_path):
    """A judge that always answers A is right exactly where the stage's reproducible order put the
    chosen answer first, and never right in both orders."""
    examples = [json.loads(line) for line in RB_SAMPLE.read_text().splitlines() if line.strip()]
    shown_first = [random_order(e["id"], 0) == "AB" for e in examples]
    outputs = tmp_path / "outputs.jsonl"
    with Judge(always("A")) as server:
        code, out, err = run_cli(capsys, "score", str(RB_SAMPLE), "--endpoint", server.url, "--json", "--outputs", str(outputs))
    assert code == 0, err
    report = json.loads(out)
    assert report["examples"] == len(examples) and report["accuracy"] == pytest.approx(sum(shown_first) / len(examples))
    assert report["position_consistent"] == 0.0
    # per order: always right when the right answer is shown as A, never as B; 0.5 over both orders
    assert report["orders"] == {"pairs": len(examples), "right_is_a": 1.0, "right_is_b": 0.0, "both": 0.5}
    assert len(server.requests) == 2 * len(examples)  # each pair in its order and swapped
    # the outputs score the same without the endpoint
    code, again, _ = run_cli(capsys, "score", str(outputs), "--json")
    assert code == 0 and json.loads(again) == report


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch) -> Iterator[None]:
    """httpx honours proxy variables; the test server is on loopback."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.mark.slow
@pytest.mark.parametrize("openai", ["oldest claimed", "newest in range"])
def test_the_client_extra_alone_calls_a_judge_with_the_oldest_and_the_newest_openai_we_claim(tmp_path, openai):
    """`pip install 'selftaught[client]'` outside the lock (PyPI, so slow-marked): with the lower
    bound of its openai range, and with whatever the range resolves to today, the tests above pass
    in a fresh virtual environment holding nothing but the extra and pytest."""
    import subprocess
    import sys
    import tomllib

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (claimed,) = [Requirement(t) for t in pyproject["project"]["optional-dependencies"]["client"] if Requirement(t).name == "openai"]
    (lowest,) = [spec.version for spec in claimed.specifier if spec.operator == ">="]
    lock = tomllib.loads((REPO / "pylock.cpu.toml").read_text())
    tools = [f"{p['name']}=={p['version']}" for p in lock["packages"] if p["name"] in ("pytest", "pytest-timeout", "pytest-asyncio")]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pin = [f"openai=={lowest}"] if openai == "oldest claimed" else []
    install = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-e", f"{REPO}[client]", *pin, *tools], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    got = subprocess.run([str(venv / "bin/python"), "-c", "import openai; print(openai.__version__)"], capture_output=True, text=True, check=True).stdout.strip()
    assert claimed.specifier.contains(got), f"openai {got} outside {claimed}"
    if openai == "oldest claimed":
        assert got == lowest
    result = subprocess.run(
        [str(venv / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", __file__], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0 and " passed" in result.stdout, f"openai {got}:\n{result.stdout[-4000:]}"
