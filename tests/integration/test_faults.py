"""Faults around the local runner: Ctrl-C, SIGTERM, SIGKILL and a second runner on one store.

The run is seeded up to its train stage, the stage where the issue was seen: torchrun starts its
worker in a new session, so only a runner that stops the whole process tree leaves no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import yaml

from selftaught.local.runner import work_folder
from selftaught.local.subprocesses import TRAINING_STOP_GRACE_SECONDS
from selftaught.method.prompts import judge_messages
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import LEASE, PAIRS_HELDOUT, sft_output
from selftaught.store.manifest import Manifest, read_manifest, write_manifest
from tests.stores import publish


def _seed_until_train(run):
    """A store where every stage before train-1 is done (the spec recorded as a runner would)."""
    store = open_run_store(run)
    accept(store, run)
    for ref in (StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("evaluate", 0)):
        write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration))
    heldout = [{"id": f"h{i}", "prompt": f"What is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}.", "subset": "default"} for i in range(4)]
    publish(store, PAIRS_HELDOUT, heldout)
    sft = [
        {"id": f"{i}:AB", "messages": judge_messages(f"question {i}", "good answer", "bad answer"), "completion": "A is better. [[A]]", "winner": "A"}
        for i in range(8)
    ]
    publish(store, sft_output(1), sft)
    return store


def _runner(manifest_path):
    return subprocess.Popen(
        [sys.executable, "-m", "selftaught", "run", str(manifest_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # as in a terminal of its own: signals below go to the runner's PID only
        # with SIGINT at its default, as a terminal's job has it: a suite started in the background
        # (`make test &`) ignores SIGINT, and an ignored SIGINT is inherited across exec
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _stage_tree(runner, timeout=120):
    """The runner's descendants once torchrun's worker runs: [torchrun, worker, ...]."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert runner.poll() is None, runner.communicate()
        tree = psutil.Process(runner.pid).children(recursive=True)
        if sum("stage" in " ".join(p.cmdline()) for p in tree if _alive(p)) >= 2:  # the torchrun agent and its worker
            return tree
        time.sleep(0.2)
    raise AssertionError("the train stage's worker never started")


def _alive(process):
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _all_gone(processes, timeout=30):
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p.pid for p in processes if _alive(p)]


def test_a_stopped_runner_leaves_no_stage_process_and_a_second_runner_is_refused(make_run, tmp_path):
    run = make_run(name="faults")
    store = _seed_until_train(run)
    manifest_path = tmp_path / "run.yaml"
    manifest_path.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))
    scratch = work_folder(run, store.uri) / "tmp"

    # Ctrl-C (SIGINT to the runner), then SIGTERM (systemd, `kill PID`): one line, no traceback, no orphan
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        runner = _runner(manifest_path)
        tree = _stage_tree(runner)
        if sig == signal.SIGINT:  # meanwhile, a second runner on the same store is refused, naming the holder
            second = subprocess.run([sys.executable, "-m", "selftaught", "run", str(manifest_path)], capture_output=True, text=True, timeout=120)
            assert second.returncode == 1 and f"already running in process {runner.pid} on host" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
        runner.send_signal(sig)
        # a train stage may take its whole stop grace (it saves its state first); past it the runner kills it
        _, stderr = runner.communicate(timeout=TRAINING_STOP_GRACE_SECONDS + 60)
        assert runner.returncode == code, stderr
        assert stderr.strip().splitlines()[-1] == "interrupted; run the same command to resume" and "Traceback" not in stderr
        assert _all_gone(tree, timeout=5) == []  # stopped before the runner exited
        assert not store.exists(LEASE) and not scratch.exists()  # lease released, temporary files gone
        assert read_manifest(store, StageRef("train", 1).manifest_key) is None

    # SIGKILL: the runner cannot clean up; its stage processes die with it all the same
    runner = _runner(manifest_path)
    tree = _stage_tree(runner)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    assert _all_gone(tree) == []
    assert store.exists(LEASE)  # left behind, and taken over at once: its holder is gone

    final = _runner(manifest_path)
    stdout, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr
    train = read_manifest(store, StageRef("train", 1).manifest_key)
    assert train.summary["examples"] == 8 and store.list(f"iter-001/train/{train.attempt}/checkpoint/")
    assert [key for key in store.list("iter-001/train/") if "/attempt-" in key and train.attempt not in key] == []  # killed attempts' files are gone
    assert read_manifest(store, StageRef("evaluate", 1).manifest_key) is not None
    assert not store.exists(LEASE) and not scratch.exists()
