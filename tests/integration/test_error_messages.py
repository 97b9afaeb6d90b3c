"""Every way a user can get a run's input or its store wrong ends in one sentence naming the thing,
with the exit code that tells a person (`selftaught run`: 2 when something must change first —
the spec, the input, the store —, 1 when trying again may help, whichever process found it) or a Job (`selftaught stage`: 3 when retrying cannot help) what to do, and never in a traceback.

Each case runs the real command in a subprocess, as a user (or a pod) would. No model is ever
loaded: each error comes before the first stage starts its engine.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXIT_RETRYABLE, EXIT_PERMANENT = 1, 3  # selftaught.errors, spelt out: these are the contract
EXIT_FIX_FIRST = 2  # what `selftaught run` exits with for every permanent reason


@dataclass
class Result:
    code: int
    stderr: str
    lines: list[str]


def selftaught(*args: str, prefix: list[str] | None = None, env: dict[str, str] | None = None) -> Result:
    """The command as a user runs it; whatever it says, never a traceback."""
    environ = {
        **os.environ,
        "SELFTAUGHT_LOG_LEVEL": "WARNING",  # the stage process logs its failure at ERROR
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **(env or {}),
    }
    done = subprocess.run(
        [*(prefix or []), sys.executable, "-m", "selftaught", *args],
        env={k: v for k, v in environ.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    # what the user is told, without the store's progress notices (`waiting 5 s for the store at ...`)
    told = [line for line in done.stderr.strip().splitlines() if " selftaught.store: waiting " not in line]
    return Result(done.returncode, done.stderr, told)


def one_line(result: Result, *needles: str) -> str:
    """The single line the user is told, checked to name each of `needles`."""
    assert len(result.lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.lines[0], result.stderr
    return result.lines[0]


def write_run(
    folder: Path, uri: str, *, endpoint: str | None = None, namespace: str = "tests", instructions: dict[str, Any] | None = None,
    storage: dict[str, Any] | None = None, iterations: int = 2, **fields: Any,
) -> Path:  # fmt: skip
    document = {
        "apiVersion": "selftaught.dev/v1alpha1",
        "kind": "SelfTaughtRun",
        "metadata": {"name": "errors", "namespace": namespace},
        "spec": {
            "models": {"seed": {"source": str(folder / "no-model")}},  # never loaded: every error comes first
            "data": {"instructions": instructions or {"source": str(REPO / "examples/data/instructions.jsonl")}},
            "storage": {"uri": uri, **({"endpoint": endpoint} if endpoint else {}), **(storage or {})},
            "iterations": iterations,
        },
        **fields,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def read_only(tmp_path) -> Iterator[tuple[Path, list[str]]]:
    """A folder the command cannot write, and the prefix to run the command with. chmod does not
    stop root, so as root the command gets its own mount namespace with a read-only bind mount of
    the folder (gone when the command ends)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, []
        folder.chmod(0o755)
        return
    prefix = ["unshare", "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)]
    if not shutil.which("unshare") or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("root without the right to mount: no way to make a folder read-only to this process")
    yield folder, prefix


@pytest.fixture(scope="module")
def answers_404() -> Iterator[str]:
    """An HTTP server that answers 404 to everything: an endpoint that is not S3 at all."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# -- selftaught run: a broken store -------------------------------------------------------------


def test_a_store_path_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    result = selftaught("run", str(write_run(tmp_path, str(tmp_path / "afile"))))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, f"{tmp_path / 'afile'} is a file where the store needs a folder")


def test_a_read_only_store_folder(tmp_path, read_only):
    folder, prefix = read_only
    result = selftaught("run", str(write_run(tmp_path, str(folder))), prefix=prefix)
    assert result.code == EXIT_FIX_FIRST
    line = one_line(result, str(folder), "the store needs a folder it can read and write")
    assert "read-only file system" in line or "permission denied" in line


def test_an_s3_endpoint_that_is_down(tmp_path):
    endpoint = f"http://127.0.0.1:{_free_port()}"
    result = selftaught("run", str(write_run(tmp_path, "s3://bucket/runs", endpoint=endpoint)))
    assert result.code == 1
    one_line(result, "s3://bucket/runs/tests/errors/", "storage unreachable", endpoint)


def test_an_s3_endpoint_that_answers_404_to_everything(tmp_path, answers_404):
    result = selftaught("run", str(write_run(tmp_path, "s3://bucket/runs", endpoint=answers_404)))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, f"the endpoint {answers_404} answered 404 Not Found", "check storage.endpoint", "bucket 'bucket'")


def test_a_missing_bucket_is_named(tmp_path, s3_server):
    result = selftaught("run", str(write_run(tmp_path, "s3://no-such-bucket/runs", endpoint=s3_server)))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, "bucket 'no-such-bucket' does not exist")


@pytest.mark.parametrize("content", ["{not json", '["a", "list"]', '{"stage": 5, "shards": "many"}'])
def test_a_corrupt_stage_manifest_is_named(tmp_path, content):
    store = tmp_path / "store"
    manifest = store / "tests/errors/categorize/_manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(content)
    run = write_run(tmp_path, str(store))
    result = selftaught("run", str(run))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, f"{manifest}: not a valid stage manifest", "delete it to run that stage again")
    stage = selftaught("stage", "select", "--run", str(run))  # the stage reads it too
    assert stage.code == EXIT_PERMANENT
    one_line(stage, "StoreCorrupt", str(manifest))


# -- selftaught run: a bad spec or option -----------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "needles"),
    [
        ({"uri": "s3://b/runs", "endpoint": "minio:9000"}, ["spec.storage.endpoint", "'minio:9000'", "add http:// or https://"]),
        ({"uri": "s3:///"}, ["spec.storage.uri", "'s3:///' names no bucket"]),
        ({"uri": "s3://"}, ["spec.storage.uri", "'s3://' names no bucket"]),
    ],
)
def test_a_store_uri_or_endpoint_that_names_no_place(tmp_path, storage, needles):
    result = selftaught("run", str(write_run(tmp_path, **storage)))
    assert result.code == 2
    one_line(result, "run.yaml", *needles)


def test_an_unwritable_logs_folder(tmp_path, read_only):
    (tmp_path / "afile").write_text("")
    run = str(write_run(tmp_path, str(tmp_path / "store")))
    result = selftaught("run", run, "--logs", str(tmp_path / "afile"))
    assert result.code == 2
    one_line(result, f"--logs {tmp_path / 'afile'}: cannot write there: a file is in the way")
    folder, prefix = read_only
    result = selftaught("run", run, "--logs", str(folder / "logs"), prefix=prefix)
    assert result.code == 2
    one_line(result, f"--logs {folder / 'logs'}: cannot write there")
    assert not (tmp_path / "store").exists()  # said before the run started


def test_a_spec_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(write_run(tmp_path, str(tmp_path / "store")).read_bytes().replace(b"errors", b"caf\xe9"))
    result = selftaught("run", str(path))
    assert result.code == 2
    one_line(result, f"{path}: not UTF-8 text", "save the file as UTF-8")


def test_a_document_of_another_kind_says_which_kind_it_is(tmp_path):
    path = tmp_path / "configmap.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = selftaught("run", str(path))
    assert result.code == 2
    one_line(result, f"{path}: found kind 'ConfigMap'; expected kind SelfTaughtRun")


def test_a_namespace_that_climbs_out_of_the_store_is_a_spec_error(tmp_path):
    store = tmp_path / "deep" / "store"
    result = selftaught("run", str(write_run(tmp_path, str(store), namespace="../../escaped")))
    assert result.code == 2
    one_line(result, "metadata.namespace", "'../../escaped' is not a valid Kubernetes name")
    assert not (tmp_path / "escaped").exists() and not store.exists()


# -- selftaught stage: what a pod is given ------------------------------------------------------


@pytest.fixture
def stage(tmp_path) -> Iterator[Any]:
    """`selftaught stage ...` of a run whose store is `tmp_path/store`; returns the result and
    the termination message the operator would read."""
    message = tmp_path / "termination.json"

    def call(*args: str, run: Path | None = None, env: dict[str, Any] | None = None) -> tuple[Result, dict[str, Any]]:
        document = ["--run", str(run or write_run(tmp_path, str(tmp_path / "store")))] if env is None or "SELFTAUGHT_RUN" not in env else []
        result = selftaught("stage", *args, *document, env={"SELFTAUGHT_TERMINATION_MESSAGE_PATH": str(message), **(env or {})})
        return result, json.loads(message.read_text()) if message.exists() else {}

    return call


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["judge", "--iteration=-1"], "judge needs an iteration >= 1, got -1"),
        (["judge", "--iteration=0"], "judge needs an iteration >= 1, got 0"),
        (["train", "--iteration=0"], "train needs an iteration >= 1, got 0"),
        (["judge", "--iteration=3"], "judge-3: no such iteration, spec.iterations is 2"),
        (["categorize", "--iteration=1"], "categorize has no iteration"),
        (["categorize", "--shard=-1"], "shard -1 out of range: categorize has shards 0 to 0"),
        (["pairs", "--shard=4"], "shard 4 out of range: pairs has shards 0 to 0"),
    ],
)
def test_a_stage_that_the_run_does_not_have_is_permanent(stage, args, needle):
    result, message = stage(*args)
    assert result.code == EXIT_PERMANENT
    one_line(result, "InvalidInput", needle)
    assert message == {"reason": "InvalidInput", "message": message["message"], "permanent": True} and needle in message["message"]


def test_a_completion_index_that_is_not_a_number(stage):
    result, message = stage("categorize", env={"JOB_COMPLETION_INDEX": "abc"})
    assert result.code == EXIT_PERMANENT
    one_line(result, "JOB_COMPLETION_INDEX='abc' is not a shard number")


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ("{not json", "SELFTAUGHT_RUN: not JSON"),
        ('["a", "list"]', "SELFTAUGHT_RUN: expected a SelfTaughtRun mapping, got list"),
        ('{"apiVersion": "batch/v1", "kind": "Job"}', "SELFTAUGHT_RUN: found kind 'Job'; expected kind SelfTaughtRun"),
        ('{"kind": "SelfTaughtRun"}', "SELFTAUGHT_RUN: apiVersion: Field required"),
        ("", "no run given: set SELFTAUGHT_RUN"),
    ],
)
def test_a_malformed_run_document_is_an_invalid_spec(stage, document, needle):
    result, message = stage("select", env={"SELFTAUGHT_RUN": document})
    assert result.code == EXIT_PERMANENT
    one_line(result, "InvalidSpec", needle)
    assert message["reason"] == "InvalidSpec" and message["permanent"] is True


def test_a_stage_on_a_broken_store_or_spec_file(stage, tmp_path, s3_server):
    (tmp_path / "afile").write_text("")
    result, message = stage("select", run=write_run(tmp_path, str(tmp_path / "afile")))
    assert (result.code, message["reason"]) == (EXIT_PERMANENT, "StorageDenied")
    one_line(result, f"{tmp_path / 'afile'} is a file where the store needs a folder")

    result, message = stage("select", run=write_run(tmp_path, "s3://no-such-bucket/runs", endpoint=s3_server))
    assert (result.code, message["reason"]) == (EXIT_PERMANENT, "StorageDenied")
    one_line(result, "bucket 'no-such-bucket' does not exist")

    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"kind: SelfTaughtRun\nmetadata: {name: caf\xe9}\n")
    result, message = stage("select", run=latin1)
    assert (result.code, message["reason"]) == (EXIT_PERMANENT, "InvalidSpec")
    one_line(result, f"{latin1}: not UTF-8 text")

    result, message = stage("select", run=write_run(tmp_path, str(tmp_path / "store"), namespace="../../escaped"))
    assert (result.code, message["reason"]) == (EXIT_PERMANENT, "InvalidSpec")
    one_line(result, "metadata.namespace")


def test_a_stage_retries_an_endpoint_that_is_down(stage, tmp_path):
    endpoint = f"http://127.0.0.1:{_free_port()}"
    result, message = stage("select", run=write_run(tmp_path, "s3://bucket/runs", endpoint=endpoint))
    assert (result.code, message["reason"], message["permanent"]) == (EXIT_RETRYABLE, "StorageUnavailable", False)
    one_line(result, "storage unreachable", endpoint)


# -- selftaught run: what a stage finds in the input, and full disks -----------------------------


def test_a_lone_surrogate_in_an_instruction_is_a_bad_record_named_by_file_and_line(tmp_path):
    data = tmp_path / "instructions.jsonl"
    data.write_text('{"instruction": "What is 2 + 2?"}\n{"instruction": "half a character: \\ud800"}\n')
    result = selftaught("run", str(write_run(tmp_path, str(tmp_path / "store"), instructions={"source": str(data)})))
    assert result.code == EXIT_FIX_FIRST  # found by the categorize stage: still the user's input
    one_line(result, "run categorize failed, reason InvalidInput", f"{data}:2: malformed JSONL line: a lone surrogate escape (such as \\ud800)")

    data.write_text('{"instruction": "half a character: \\ud800"}\n')  # skipped like any bad record: nothing is left
    result = selftaught("run", str(write_run(tmp_path, str(tmp_path / "store2"), instructions={"source": str(data), "onBadRecord": "skip"})))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, "reason EmptyDataset", "all 1 records were skipped under onBadRecord: skip", f"{data}:1: malformed JSONL line: a lone surrogate")


def test_a_data_source_in_a_bucket_that_does_not_exist_is_named(tmp_path, s3_server):
    run = write_run(tmp_path, str(tmp_path / "store"), instructions={"source": "s3://no-such-data/instructions.jsonl"}, storage={"sourceEndpoint": s3_server})
    result = selftaught("run", str(run))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, "reason StorageDenied", "bucket 'no-such-data' does not exist")


def test_fewer_iterations_than_a_run_has_output_for_are_refused(tmp_path):
    from selftaught.api.load import load_run
    from selftaught.pipeline.runstore import accept, open_run_store
    from selftaught.pipeline.table import StageRef
    from selftaught.store.manifest import Manifest, write_manifest

    uri = str(tmp_path / "store")
    run = load_run(write_run(tmp_path, uri, iterations=2))
    store = open_run_store(run)
    accept(store, run)
    for ref in (StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("judge", 1), StageRef("train", 1), StageRef("judge", 2)):
        write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration))
    result = selftaught("run", str(write_run(tmp_path, uri, iterations=1)))  # iteration 2 has output
    assert result.code == EXIT_FIX_FIRST
    one_line(result, "this run already started with another spec", "keep their accepted values: iterations")


CATEGORIZED = [
    {"id": f"i{n}", "instruction": f"Prove that {n} + {n} is even, step by step, and say why each step holds. " * 2, "category": "Mathematical reasoning", "complexity": 5, "length": 3}
    for n in range(600)
]  # about 150 KB: more than the full disks below have left


def _until_select(tmp_path: Path, uri: str) -> Path:
    """A run whose categorize stage is done (its output about 150 KB): select, a CPU stage that
    loads no model, is next."""
    from selftaught.api.load import load_run
    from selftaught.pipeline.runstore import accept, open_run_store
    from tests.stores import publish

    path = write_run(tmp_path, uri)
    run = load_run(path)
    store = open_run_store(run)
    accept(store, run)
    publish(store, ("categorize", "shard-00000.jsonl"), CATEGORIZED)
    return path


def in_tmpfs(folder: Path, size: str, contents: Path | None = None) -> list[str]:
    """The prefix that runs a command with a tmpfs of `size` on `folder` (holding a copy of
    `contents`), in a mount namespace of its own: a disk that really fills up, gone with the command."""
    folder.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" && { [ -z "$2" ] || cp -a "$2/." "$0/"; } && shift 2 && exec "$@"'
    namespace = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    prefix = [*namespace, "sh", "-c", script, str(folder), size, str(contents or "")]
    if not shutil.which("unshare") or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("no right to mount a tmpfs in a mount namespace of its own: no disk to fill")
    return prefix


def test_a_full_store_is_named_not_the_temporary_copy(tmp_path):
    store = tmp_path / "store"
    run = _until_select(tmp_path, str(store))
    seed = tmp_path / "seed"
    store.rename(seed)  # what the tmpfs will hold: the store as categorize left it
    result = selftaught("run", str(run), "--logs", str(tmp_path / "logs"), prefix=in_tmpfs(store, "256k", seed))
    assert result.code == EXIT_RETRYABLE  # free the space, run again
    line = one_line(result, "run select failed, reason OutOfSpace", f"the store {store / 'tests/errors'} ran out of space (no space left on device writing select/attempt-")
    assert "/selected.jsonl; " in line and "of 256 KiB now); free space on its disk, or point storage.uri at a larger one" in line and ".tmp" not in line


def test_a_full_temporary_folder_is_named(tmp_path):
    run = _until_select(tmp_path, str(tmp_path / "store"))
    temporary = tmp_path / "tmp"
    result = selftaught("run", str(run), "--logs", str(tmp_path / "logs"), prefix=in_tmpfs(temporary, "64k"), env={"TMPDIR": str(temporary)})
    assert result.code == EXIT_RETRYABLE
    line = one_line(result, "run select failed, reason OutOfSpace", f"the temporary folder (TMPDIR) {temporary}/selftaught-tests-errors-")
    assert "ran out of space (no space left on device writing select/attempt-" in line and "/selected.jsonl before its upload; " in line
    assert "of 64 KiB now); free space there, or set TMPDIR to a folder on a larger disk" in line


# -- selftaught score ------------------------------------------------------------------------------


def test_score_names_a_line_that_is_not_utf8_and_refuses_a_file_without_records(tmp_path):
    path = tmp_path / "outputs.jsonl"
    path.write_bytes(b'{"subset": "alpacaeval-easy", "winner": "A", "output": "[[A]]"}\n{"subset": "caf\xe9", "winner": "A"}\n')
    result = selftaught("score", str(path))
    assert result.code == EXIT_FIX_FIRST
    one_line(result, f"{path}:2: not UTF-8 text (invalid continuation byte at byte 16)")
    for content in ("", "\n\n"):
        path.write_text(content)
        result = selftaught("score", str(path))
        assert result.code == EXIT_FIX_FIRST  # never an accuracy over nothing
        one_line(result, f"error: {path}: no records to score")
