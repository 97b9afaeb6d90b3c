"""One failure vocabulary: every reason the code reports is a `Reason` with its class, the docs
table lists them all, and one codec carries a `Failure` from a stage (its process, or a pod's
shell) to whoever reads it (the local runner, the operator)."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from selftaught.controller.decide import parse_termination_message
from selftaught.controller.jobs import RENDEZVOUS_TIMEOUT_SECONDS, build_job
from selftaught.errors import (
    MESSAGE_LIMIT,
    TERMINATION_MESSAGE_VARIABLE,
    Failure,
    InvalidSpec,
    Reason,
    ReasonClass,
    SelftaughtError,
    decode,
    encode,
    failure_of,
    reason_class,
    shell_write,
)
from selftaught.pipeline.table import StageRef

from .test_jobs import CONFIG, _container, _run
from .test_spec import MINIMAL

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "selftaught"
#: string literals that equal a reason but are someone else's word: Kubernetes' (a Job condition's
#: reason, a container's terminated reason), and the Event a stage's failed Job posts
NOT_OURS = {("controller/decide.py", "DeadlineExceeded"), ("controller/decide.py", "OOMKilled"), ("controller/report.py", "StageFailed")}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != PACKAGE / "errors.py":
            yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text())


# -- the enum ------------------------------------------------------------------------------------


def test_reasons_compare_and_serialize_as_the_strings_users_see():
    assert Reason.OOM_KILLED == "OOMKilled" and f"{Reason.JOB_DELETED}" == "JobDeleted" and encode(Failure(Reason.INVALID_JOB, "x")).startswith('{"reason": "InvalidJob"')
    assert Reason("RunNameInUse") is Reason.RUN_NAME_IN_USE and len({reason.value for reason in Reason}) == len(Reason)


def test_each_class_decides_whether_a_stage_is_retried():
    assert {reason for reason in Reason if reason.kind is ReasonClass.OPERATOR} == {
        Reason.INVALID_SPEC, Reason.SNAPSHOT_UNREADABLE, Reason.RUN_NAME_IN_USE, Reason.UNSAFE_EDIT,
    }  # fmt: skip
    assert all(reason.permanent == (reason.kind is not ReasonClass.TRANSIENT) for reason in Reason)
    assert not Reason.DISRUPTED.permanent and Reason.INVALID_JOB.permanent and Reason.INVALID_SPEC.permanent
    assert reason_class("ImagePullBackOff") is ReasonClass.TRANSIENT  # Kubernetes' own pass through
    assert Failure.of(Reason.NO_MANIFEST, "m") == Failure("NoManifest", "m", False) and Failure.of(Reason.INVALID_JOB, "m").permanent


def test_every_exception_carries_a_reason_of_the_enum_and_its_class_is_its_permanence():
    import selftaught.local.lease  # every module that defines one
    import selftaught.local.runner
    import selftaught.pipeline.runstore
    import selftaught.pipeline.served  # noqa: F401

    classes, todo = [], [SelftaughtError]
    while todo:
        classes.append(todo.pop())
        todo += classes[-1].__subclasses__()
    assert len(classes) > 15
    for cls in classes:
        assert isinstance(cls.reason, Reason), cls
        if cls.__init__ is SelftaughtError.__init__:
            assert cls("m").permanent == cls.reason.permanent == failure_of(cls("m")).permanent, cls
    assert failure_of(InvalidSpec("bad")) == Failure(Reason.INVALID_SPEC, "bad", True)
    assert failure_of(MemoryError()).reason == Reason.OUT_OF_MEMORY


def test_no_reason_is_spelled_as_a_bare_string_and_none_is_invented_beside_the_enum():
    """Every reason raised, built into a Failure or compared is the enum's; a new one must be
    added there (with its class and a line in the docs)."""
    values = {reason.value for reason in Reason}
    for name, tree in _modules():
        listed = {id(node) for top in ast.walk(tree) if isinstance(top, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in top.targets) for node in ast.walk(top)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in values and id(node) not in listed:
                assert (name, node.value) in NOT_OURS, f"{name}:{node.lineno}: {node.value!r} is Reason.{Reason(node.value).name}"
            if isinstance(node, ast.ClassDef):  # `reason = ...` of an exception class
                for item in node.body:
                    if isinstance(item, ast.Assign) and [getattr(t, "id", "") for t in item.targets] == ["reason"]:
                        value = item.value
                        assert isinstance(value, ast.Attribute) and getattr(value.value, "id", "") == "Reason", f"{name}:{item.lineno}"
            if isinstance(node, ast.Call) and (ast.unparse(node.func) in ("Failure", "Failure.of")) and node.args:
                assert not isinstance(node.args[0], ast.Constant), f"{name}:{node.lineno}: a reason outside the enum"


def test_the_docs_table_lists_every_reason_with_its_class():
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("<!-- reasons table: generated by docs/gen_reference.py", 1)[1].split("<!-- end of reasons table -->", 1)[0]
    rows = dict(re.findall(r"^\| `([A-Za-z]+)` \| (transient|permanent|operator) \|", block, flags=re.MULTILINE))
    assert rows == {reason.value: reason.kind.value for reason in Reason}


# -- the codec -----------------------------------------------------------------------------------


FAILURES = [
    Failure.of(Reason.NO_TRAINING_DATA, "judge-1: no correct judgment kept"),
    Failure(Reason.STAGE_FAILED, 'KeyError: "messages" — it\'s {not} JSON\nsecond line', False),
    Failure("ImagePullBackOff", "Back-off pulling image", False),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failure_survives_the_termination_message(failure):
    assert decode(encode(failure)) == failure


def test_the_message_is_cut_to_fit_and_what_is_not_a_failure_decodes_to_none():
    assert len(decode(encode(Failure(Reason.STAGE_FAILED, "x" * 10_000))).message) == MESSAGE_LIMIT  # type: ignore[union-attr]
    for text in (None, "", "Traceback (most recent call last):", "[1, 2]", '{"message": "no reason"}', "{"):
        assert decode(text) is None
    assert decode('{"reason": "JobFailed"}') == Failure(Reason.JOB_FAILED, "", False)


def test_the_stage_process_writes_what_the_readers_decode(tmp_path, monkeypatch):
    from selftaught import stage_process as process

    monkeypatch.setattr(process, "die_with_parent", lambda: None)  # not the test process's parent-death signal
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setenv(TERMINATION_MESSAGE_VARIABLE, str(tmp_path / "termination-log"))
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({**MINIMAL, "spec": {**MINIMAL["spec"], "iterations": 2}}))
    assert process.main("judge", 9, None, str(run_file)) == 3
    told = decode((tmp_path / "termination-log").read_text())
    assert told == Failure.of(Reason.INVALID_INPUT, "judge-9: no such iteration, spec.iterations is 2")
    assert parse_termination_message((tmp_path / "termination-log").read_text(), 3, "Error") == told  # the operator's reading


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_pods_shell_writes_exactly_what_the_codec_encodes(tmp_path, shell):
    failure = Failure.of(Reason.RENDEZVOUS_TIMEOUT, "${MASTER_ADDR} (training index 0) isn't there: 100% {gone}")
    path = tmp_path / "termination-log"
    env = {"PATH": "/usr/bin:/bin", "MASTER_ADDR": "r1-train-1-0-0.r1-train-1-0", TERMINATION_MESSAGE_VARIABLE: str(path)}
    subprocess.run([shell, "-c", shell_write(failure)], env=env, check=True, timeout=30)
    expected = Failure.of(Reason.RENDEZVOUS_TIMEOUT, "r1-train-1-0-0.r1-train-1-0 (training index 0) isn't there: 100% {gone}")
    assert path.read_text() == encode(expected) and decode(path.read_text()) == expected


def test_a_training_pods_rendezvous_give_up_is_decoded_by_the_operator(tmp_path):
    job = build_job(_run(train={"nodes": 2}), StageRef("train", 1), 0, CONFIG)
    script = _container(job)["command"][2].replace(f"+ {RENDEZVOUS_TIMEOUT_SECONDS} ))", "+ 1 ))")
    path = tmp_path / "termination-log"
    env = {"PATH": "/usr/bin:/bin", "MASTER_ADDR": "r1-train-1-0-0.r1-train-1-0.invalid", TERMINATION_MESSAGE_VARIABLE: str(path)}
    assert subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60, check=False).returncode == 1
    expected = Failure.of(Reason.RENDEZVOUS_TIMEOUT, f"r1-train-1-0-0.r1-train-1-0.invalid (training index 0) did not resolve within {RENDEZVOUS_TIMEOUT_SECONDS}s")
    assert parse_termination_message(path.read_text(), 1, "Error") == expected


def test_the_local_runner_reads_a_stage_failure_with_the_same_codec(tmp_path):
    from selftaught.local.runner import StageFailed, _failure, _Job

    job = _Job(["true"], tmp_path / "judge-1.log", tmp_path / "judge-1.termination", shard=2)
    job.message_file.write_text(encode(Failure.of(Reason.NO_TRAINING_DATA, "nothing kept")))
    failed = _failure(StageRef("judge", 1), job, 3)
    assert isinstance(failed, StageFailed) and failed.reason == Reason.NO_TRAINING_DATA and failed.permanent
    assert str(failed) == f"run judge-1 failed, reason NoTrainingData: shard 2: nothing kept (log: {job.log_path})"
    job.message_file.write_text("Segmentation fault")  # not written by the codec: said as it is
    assert str(_failure(StageRef("judge", 1), job, 139)) == f"run judge-1 failed, reason StageFailed: shard 2: Segmentation fault (log: {job.log_path})"
