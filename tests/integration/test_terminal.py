"""What `selftaught run` prints as it goes: the whole run's time left on each `▶` line, a line
every few seconds while a stage is still loading its model, and `✓` lines that fit a terminal
(under 120 characters, paths relative to the run's store, no per-GPU rate without GPUs)."""

from __future__ import annotations

import re
import sys
import time

from selftaught.local import runner
from selftaught.local.runner import _watcher, run_local
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.scan import scan
from selftaught.pipeline.table import StageRef
from selftaught.store import LocalStore
from selftaught.store.layout import progress_key
from selftaught.store.manifest import read_manifest, write_manifest
from selftaught.store.progress import ProgressRecord, write_progress
from selftaught.views.display import StageDisplay
from selftaught.views.overview import brief_stage
from tests.conftest import REPO

from .test_report import STAGES, finished_run

FAKE_STAGE = REPO / "tests" / "operator" / "fake_stage.py"


def test_each_start_says_the_runs_time_left_and_each_finish_fits_a_terminal(make_run, monkeypatch, tmp_path):
    run = make_run(iterations=1)
    store = open_run_store(run)
    monkeypatch.setattr(runner, "stage_command", lambda spec, ref, **_: [sys.executable, str(FAKE_STAGE), "stage", ref.name, f"--iteration={ref.iteration}"])
    monkeypatch.setenv("FAKE_CHECKPOINT", store.url("iter-001/train/attempt-0123abcd/checkpoint"))
    lines: list[str] = []
    run_local(run, echo=lines.append, log_dir=tmp_path / "logs")
    starts = [line for line in lines if " ▶ " in line]
    assert len(starts) == 7
    left = [re.search(r"▶ \(\d/7 stages done, the run ~(\S+) left\)$", line) for line in starts]
    assert all(left), starts
    finishes = [line for line in lines if " ✓ " in line]
    assert len(finishes) == 7 and all(len(line) < 120 for text in finishes for line in text.splitlines()), finishes
    [train] = [text for text in finishes if "train-1" in text]  # its checkpoint on a line of its own, relative to the store
    assert train.splitlines()[1] == " " * 25 + "→ iter-001/train/attempt-0123abcd/checkpoint" and train.splitlines()[0].endswith("✓ (0.1s)")


def test_a_stage_that_is_still_loading_its_model_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.2)
    store = LocalStore(tmp_path / "store")
    ref = StageRef("judge", 1)
    said: list[str] = []
    tick = _watcher(store, ref, 1, StageDisplay(ref.label, said.append, bar=False), said.append, every=0.0)
    time.sleep(0.25)
    tick()  # no progress object yet: the process is starting
    assert len(said) == 1 and re.fullmatch(r"judge-1      … starting: loading its model and reading its input \(\d+s\)", said[0])
    now = time.time()
    write_progress(store, progress_key(ref.prefix, 0), ProgressRecord(stage="judge-1", started_at=now, updated_at=now, total=100))
    time.sleep(0.25)
    tick()
    assert said[-1].startswith("judge-1      … loading its model (")
    write_progress(store, progress_key(ref.prefix, 0), ProgressRecord(stage="judge-1", started_at=now, updated_at=now + 1, total=100, done=10))
    time.sleep(0.25)
    count = len(said)
    tick()  # working: the progress line, and no more heartbeats
    assert len(said) == count + 1 and said[-1].startswith("judge-1      … 10.0% (10/100 samples)")


def test_finished_lines_stay_short_with_store_relative_paths_and_per_gpu_rates_only_on_gpus(tmp_path):
    run, store = finished_run(tmp_path)
    train = StageRef("train", 1)
    manifest = read_manifest(store, train.manifest_key)
    summary = {**manifest.summary, "checkpoint": store.url("iter-001/train/attempt-2e871a87db4c/checkpoint"), "tokensPerSecondPerGpu": 812.5}
    write_manifest(store, train.manifest_key, manifest.model_copy(update={"summary": summary}))
    progress = scan(store)
    for ref, *_ in STAGES:  # the evaluate stages' summaries are long: every order, every interval
        text = f"[{211.5:6.1f}s] {ref.label:<12} ✓ {brief_stage(ref, progress, store.uri, gpus=False)}"
        assert all(len(line) < 120 for line in text.splitlines()), text
    on_cpu = brief_stage(train, progress, store.uri, gpus=False)
    assert on_cpu == "examples 72 (24.0s)\n" + " " * 25 + "→ iter-001/train/attempt-2e871a87db4c/checkpoint"
    assert brief_stage(train, progress, store.uri, gpus=True) == "examples 72, 812 tok/s/GPU (24.0s)\n" + " " * 25 + "→ iter-001/train/attempt-2e871a87db4c/checkpoint"
    evaluation = brief_stage(StageRef("evaluate", 2), progress, store.uri, gpus=False)
    assert evaluation.startswith("evaluated held-out pairs, accuracy 1.00 [0.72, 1.00]") and "orderA" not in evaluation


def test_a_methods_own_numbers_stay_on_its_finished_line():
    """DPO's pairs, a pointwise judge's kept ratings, GRPO's reward: what the less telling numbers
    make room for."""
    from selftaught.pipeline.scan import Progress
    from selftaught.store.manifest import Manifest

    judge = {"tried": 68, "kept": 68, "keepRate": 1.0, "trainingExamples": 68, "truncated": 0, "tokensPerKept": 23.9, "fixedNTokensPerKept": 88.0}
    grpo = {"checkpoint": "/runs/x/iter-001/train/attempt-abcdef123456/checkpoint", "prompts": 16, "steps": 8, "rollouts": 16, "reward": 1.25, "trainAccuracy": 0.625}
    for ref, summary, needle in (
        (StageRef("judge", 1), {**judge, "pairs": 60, "alwaysRight": 8}, "pairs 60, alwaysRight 8 (18.0s)"),
        (StageRef("judge", 1), {**judge, "keptPointwise": 60, "ties": 3, "inverted": 2}, "keptPointwise 60, ties 3, inverted 2 (18.0s)"),
        (StageRef("train", 1), {**grpo, "rolloutTokensPerSecondPerGpu": 100.0, "curve": [{"step": 1}]}, "rollouts 16, reward 1.25, trainAccuracy 0.625 (18.0s)"),
    ):
        progress = Progress(manifests={ref: Manifest(stage=ref.name, iteration=1, seconds=18.0, summary=summary)})
        text = f"[{118.3:6.1f}s] {ref.label:<12} ✓ {brief_stage(ref, progress, '/runs/x', gpus=False)}"
        assert needle in text and all(len(line) < 120 for line in text.splitlines()), text
