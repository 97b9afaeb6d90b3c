"""Beyond the paper, on the real engines (vLLM's CPU build, DeepSpeed on CPU) and the tiny model:
a pointwise judge rates answers and is evaluated in rating mode; DPO trains on pairs of its own
judgments; GRPO samples and rewards judgments inside its train stage; the quickstart's three
variations run end to end (slow)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selftaught.local.runner import _run_stage
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.stage_process import run_stage
from selftaught.store.layout import PAIRS_TRAIN, metrics_output, progress_key, sft_output
from selftaught.store.manifest import published_key, read_manifest
from selftaught.store.progress import read_progress
from tests.stores import publish, read_output

REPO = Path(__file__).resolve().parents[2]


def test_a_pointwise_judge_keeps_a_rating_of_each_answer_and_is_evaluated_in_rating_mode(make_run):
    run = make_run(judge={"samples": 6, "format": "pointwise", "maxTokens": 24}, evaluate={"maxTokens": 24})
    for name in ("categorize", "select", "pairs"):
        run_stage(run, StageRef(name))
    judged = run_stage(run, StageRef("judge", 1))
    store = open_run_store(run)
    examples = read_output(store, sft_output(1))
    summary = judged.summary
    assert summary["keptPointwise"] == summary["kept"] > 0 and len(examples) == 2 * summary["kept"]
    for chosen, rejected in zip(examples[::2], examples[1::2], strict=True):  # each kept pair: its two ratings
        assert chosen["id"].endswith(":rating:chosen") and rejected["id"].endswith(":rating:rejected")
        assert int(chosen["completion"].split()[-1]) > int(rejected["completion"].split()[-1])
        assert "[Your judgement]" in chosen["messages"][-1]["content"]
    assert summary["tried"] == len(read_output(store, PAIRS_TRAIN))  # one rating item per pair, no orders
    evaluated = run_stage(run, StageRef("evaluate", 0))  # the seed judge, rated: evaluate.mode auto
    metrics = json.loads(store.read_text(published_key(store, *metrics_output(0))))
    outputs = [r for key in sorted(store.list("iter-000/evaluate/")) if key.endswith(".jsonl") for r in read_output_key(store, key)]
    assert outputs and all(len(r["rated"]) == 2 and "output" not in r for r in outputs)
    assert evaluated.summary["examples"] == len(outputs) and 0.0 <= metrics["accuracy"] <= 1.0


def test_a_grpo_train_stage_samples_and_rewards_judgments_of_the_pairs_and_reports_reward_and_accuracy(make_run, tmp_path):
    """No judge stage: train-1 reads the pairs, samples groups of judgments from the seed with the
    judge prompt, and trains on their rewards (TRL's GRPOTrainer, DeepSpeed on CPU, `generate`)."""
    run = make_run(train={"method": "grpo", "microBatchSize": 4, "grpo": {"groupSize": 4, "steps": 3, "rewards": {"format": 0.5, "consistency": 0.5}}})
    store = open_run_store(run)
    pairs = [{"id": f"p{i}", "instruction": f"What is {i} + {i}?", "chosen": f"{i} + {i} = {2 * i}.", "rejected": f"{i} + {i} = {2 * i + 1}."} for i in range(3)]
    publish(store, PAIRS_TRAIN, pairs)
    ref = StageRef("train", 1)
    _run_stage(run, ref, tmp_path, tmp_path)  # torchrun, one CPU process, gloo
    manifest = read_manifest(store, ref.manifest_key)
    summary = manifest.summary
    assert summary["prompts"] == 6 and summary["steps"] == 3  # both orders of 3 pairs
    assert summary["rollouts"] == 16  # generation batches of a pair in both orders x 4 judgments, every other step
    assert 0.0 <= summary["trainAccuracy"] <= 1.0 and 0.0 <= summary["reward"] <= 2.0
    assert summary["curve"] and {"step", "reward", "correct", "format", "consistency"} <= set(summary["curve"][0])
    assert manifest.counts["tokens"] == manifest.counts["rollout_tokens"] > 0
    assert (Path(store.url(summary["checkpoint"])) / "model.safetensors").exists()  # store-relative
    progress = read_progress(store, progress_key(ref.prefix, 0))
    assert progress.finished and progress.unit == "steps" and set(progress.metrics) == {"reward", "accuracy"}


def read_output_key(store, key):
    return [json.loads(line) for line in store.read_text(key).splitlines() if line.strip()]


def _variation(tmp_path: Path, name: str) -> str:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    selftaught = [sys.executable, "-m", "selftaught"]
    subprocess.run([*selftaught, "dev", "tiny-model", ".selftaught/models/tiny-judge"], cwd=tmp_path, check=True, capture_output=True)
    done = subprocess.run([*selftaught, "run", f"examples/{name}.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_the_dpo_variation_of_the_quickstart_runs_end_to_end(tmp_path):
    out = _variation(tmp_path, "local-quickstart-dpo")
    judged = re.findall(r"judge-\d\s+✓ .*?pairs (\d+)", out)
    assert len(judged) == 2 and all(int(n) > 0 for n in judged)  # pairs of a right and a wrong judgment
    assert len(re.findall(r"train-\d\s+✓ .*\n\s+→ iter-00\d/train/attempt-\w+/checkpoint", out)) == 2  # relative to the run's store
    assert (tmp_path / ".selftaught/runs/local/quickstart-dpo/iter-002/judge").is_dir()


@pytest.mark.slow
def test_the_pointwise_variation_of_the_quickstart_runs_end_to_end(tmp_path):
    out = _variation(tmp_path, "local-quickstart-pointwise")
    kept = re.findall(r"judge-\d\s+✓ .*?keptPointwise (\d+)", out)
    assert len(kept) == 2 and all(int(n) > 0 for n in kept)
    assert len(re.findall(r"evaluate-\d\s+✓ evaluated ", out)) == 3  # pairwise+pointwise: evaluated pairwise


@pytest.mark.slow
@pytest.mark.timeout(900)  # as long as `_variation` waits for the run: ~3 min on 2 idle cores, 10 on busy ones
def test_the_grpo_variation_of_the_quickstart_runs_every_stage_on_cpu(tmp_path):
    out = _variation(tmp_path, "local-quickstart-grpo")
    assert "judge-" not in out  # no judge stage: the train stage samples its own judgments
    trained = re.findall(r"train-\d\s+✓ .*?rollouts (\d+), reward ([\d.]+), trainAccuracy ([\d.]+)", out)
    assert len(trained) == 2 and all(int(rollouts) > 0 and 0.0 <= float(accuracy) <= 1.0 for rollouts, _, accuracy in trained)
    assert len(re.findall(r"evaluate-\d\s+✓ evaluated ", out)) == 3
    assert re.search(r"iter\s+reward\s+train-acc\s+accuracy", out)  # the iteration table shows what ran
    run = tmp_path / ".selftaught/runs/local/quickstart-grpo"
    assert not (run / "iter-001/judge").exists() and (run / "iter-002/train").is_dir()
    assert 'id="plot-rewards"' in (run / "report/index.html").read_text()
