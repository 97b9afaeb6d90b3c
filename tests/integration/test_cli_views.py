"""`selftaught plan`, `selftaught status` and `selftaught report` as a person types them: the
plan and its cost before launch, a run's progress read from its store by someone who did not
start it, and its report on demand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import yaml

from selftaught.api.load import load_run
from selftaught.pipeline.runstore import accept
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import REPORT, progress_key
from selftaught.store.manifest import Manifest, write_manifest
from selftaught.store.progress import ProgressRecord, write_progress
from selftaught.views.estimate import estimate, inputs_for
from tests.conftest import REPO

from .test_report import STAGES, finished_run

PAPER = REPO / "manifests/examples/paper-replication.yaml"


def selftaught(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "selftaught", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_plan_prints_every_stage_its_cost_and_what_adaptive_judging_saves():
    result = selftaught("plan", PAPER)
    assert result.returncode == 0, result.stderr
    spec = load_run(PAPER).spec
    expected = estimate(spec, inputs_for(spec))
    lines = result.stdout.splitlines()
    for row in expected.rows:
        assert any(line.startswith(f"{row.label} ") and f"{row.gpu_hours:.1f}" in line for line in lines), row.label
    assert "16 pods x 8 GPUs, 4 at once" in result.stdout and "4 nodes x 8 GPUs" in result.stdout
    assert f"in all ~{expected.gpu_hours:,.0f} GPU-hours" in result.stdout
    assert "adaptive judging: ~2.3 samples per item instead of 15" in result.stdout
    votes = expected.votes  # the paper's 32-sample majority vote, stopped once decided: the same scores
    assert f"majority votes stopped once decided (exact): ~{votes.samples_per_example:.1f} samples per example instead of 32" in result.stdout
    assert f"{votes.gpu_hours:,.1f} instead of {votes.all_k_gpu_hours:,.1f} GPU-hours" in result.stdout and votes.gpu_hours < votes.all_k_gpu_hours
    assert "1,040,000 instructions (spec.estimate.instructions)" in result.stdout


def test_plan_assumptions_change_on_the_command_line():
    base = json.loads(selftaught("plan", PAPER, "--json").stdout)
    slower = json.loads(selftaught("plan", PAPER, "--json", "--gpu", "A100", "--judge-accuracy", "0.5").stdout)
    assert slower["gpu"] == "A100" and slower["gpuHours"] > base["gpuHours"]
    assert slower["adaptive"]["samplesPerItem"] > base["adaptive"]["samplesPerItem"]
    assert slower["votes"]["samplesPerExample"] > base["votes"]["samplesPerExample"]  # a weaker judge's votes run longer
    longer = json.loads(selftaught("plan", PAPER, "--json", "--assume", "answerTokens=1000", "--assume", "throughput.decodeTflops=35").stdout)
    assert longer["generatedTokens"] > base["generatedTokens"] and longer["gpuHours"] > base["gpuHours"]
    wrong = selftaught("plan", PAPER, "--assume", "judgeAcuracy=0.5")
    assert wrong.returncode == 2 and "spec.estimate.judgeAcuracy" in wrong.stderr


def test_plan_of_data_it_cannot_count_says_what_to_set(tmp_path):
    document = yaml.safe_load(PAPER.read_text())
    del document["spec"]["estimate"]
    manifest = tmp_path / "run.yaml"
    manifest.write_text(yaml.safe_dump(document))
    result = selftaught("plan", manifest)
    assert result.returncode == 2 and "spec.estimate.instructions" in result.stdout
    assert selftaught("plan", manifest, "--instructions", "5000").returncode == 0


def halfway(tmp_path):
    """A run stopped in judge-1 (2 shards): shard 0 done, shard 1 a third through, 20 s in."""
    run, store = finished_run(tmp_path)
    for ref, *_ in STAGES:
        if ref.iteration >= 1 or ref == StageRef("evaluate", 0):
            store.delete(ref.manifest_key)
    run = run.model_copy(update={"spec": run.spec.model_copy(update={"generation": run.spec.generation.model_copy(update={"shards": 2})})})
    accept(store, run)  # run.json: what a person finds in the store
    judge = StageRef("judge", 1)
    write_manifest(store, judge.shard_manifest_key(0), Manifest(stage="judge", iteration=1, shard=0))
    now = time.time()
    for shard, done in ((0, 300), (1, 100)):
        record = ProgressRecord(stage="judge-1", shard=shard, done=done, total=300, tokens=1000, started_at=now - 20, updated_at=now, finished=shard == 0)
        write_progress(store, progress_key(judge.prefix, shard), record)
    return run, store


def test_status_shows_a_run_started_elsewhere_from_its_store_alone(tmp_path):
    from .test_run_states import hold_lease

    run, store = halfway(tmp_path)
    hold_lease(store, os.getpid())  # a live `selftaught run` runs it
    result = selftaught("status", store.uri)  # the run's folder: no manifest file at hand
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"run local/quickstart: 3 of 10 stages done; store {store.uri}" in out and f"running: selftaught run, process {os.getpid()}" in out
    assert "✓ categorize   instructions 50" in out and "✓ pairs" in out
    # 400 of 600 samples, shard 1 at 5/s: 200 left, 40 s
    assert "… judge-1      66.7% (400/600 samples, 1/2 shards), 50 tok/s, ETA 40s" in out
    assert "· evaluate-0   next" in out and "· train-1      waiting" in out
    assert "cost: " in out and "stages measured" in out
    from_file = tmp_path / "run.yaml"  # or the manifest it was started from
    from_file.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))
    expiry = re.compile(r"expires in \d+ s")
    assert expiry.sub("", selftaught("status", from_file).stdout) == expiry.sub("", out)


def test_status_of_a_folder_without_a_run_says_so(tmp_path):
    result = selftaught("status", tmp_path / "nothing")
    assert result.returncode == 2 and "no run here" in result.stderr


def test_report_renders_on_demand_and_status_points_to_it(tmp_path):
    run, store = finished_run(tmp_path)
    accept(store, run)
    result = selftaught("report", store.uri)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == store.url(REPORT) and store.exists(REPORT)
    assert f"report: {store.url(REPORT)}" in selftaught("status", store.uri).stdout
