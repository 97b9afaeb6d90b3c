"""`selftaught run`: a whole run on the local default, killed mid-stage and started again."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from selftaught.local.runner import run_local
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import metrics_output
from selftaught.store.manifest import Manifest, published_key, read_manifest, write_manifest


def _start(manifest_path, logs):
    return subprocess.Popen(
        [sys.executable, "-m", "selftaught", "run", str(manifest_path), "--logs", str(logs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so the test can kill the runner and its stage process together
    )


def _wait_for(predicate, timeout, process):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_run_killed_inside_a_stage_resumes_without_redoing_finished_work(make_run, bucket, s3_server, tmp_path):
    run = make_run(name="killed", storage=bucket, endpoint=s3_server, generation={"shards": 4})
    manifest_path = tmp_path / "run.yaml"
    manifest_path.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))
    store = open_run_store(run)
    judge = StageRef("judge", 1)

    first = _start(manifest_path, tmp_path / "logs-1")
    _wait_for(lambda: store.exists(judge.shard_manifest_key(0)), 240, first)
    os.killpg(first.pid, signal.SIGKILL)  # no chance to clean up: like a lost node
    first.wait()
    before = {ref: read_manifest(store, ref.manifest_key) for ref in (StageRef("categorize"), StageRef("select"), StageRef("pairs"))}
    shard_zero = read_manifest(store, judge.shard_manifest_key(0))

    second = _start(manifest_path, tmp_path / "logs-2")
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    started = re.findall(r"\]\s+(\S+)\s+▶", output)
    assert started and not {"categorize", "select", "pairs"} & set(started), output
    for ref, manifest in before.items():
        assert read_manifest(store, ref.manifest_key).finished_at == manifest.finished_at
    assert read_manifest(store, judge.shard_manifest_key(0)).finished_at == shard_zero.finished_at
    assert "run finished in" in output and "iter" in output
    for iteration in (0, 1):
        assert store.exists(published_key(store, *metrics_output(iteration)))
    assert store.url(read_manifest(store, StageRef("train", 1).manifest_key).summary["checkpoint"]).startswith(bucket)  # store-relative


def test_a_restart_with_an_unsafe_edit_is_refused_by_field_name_and_safe_edits_apply(make_run):
    from selftaught.errors import InvalidSpec
    from selftaught.pipeline.runstore import accept

    run = make_run()
    store = open_run_store(run)
    assert accept(store, run).refused == []
    judge = StageRef("judge", 1)  # a finished shard: judge-1 has output that judge.samples changes
    write_manifest(store, judge.shard_manifest_key(0), Manifest(stage=judge.name, iteration=judge.iteration, shard=0))
    edited = make_run(judge={"samples": 9}, iterations=3)
    acceptance = accept(store, edited)  # the operator's policy, and the local runner's
    assert acceptance.refused == ["judge.samples"] and "judge.samples" in acceptance.refusal
    assert acceptance.spec.iterations == 3 and acceptance.spec.judge.samples == run.spec.judge.samples
    with pytest.raises(InvalidSpec, match="cannot change after the run started .*: judge.samples"):
        run_local(edited, echo=lambda _: None)  # refused before any stage runs
    assert accept(store, make_run(iterations=3)).refused == []  # safe: more iterations
