"""Each stage on the real engines: vLLM (CPU build) on the tiny model, DeepSpeed on CPU, data in
S3 over HTTP."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selftaught.errors import NoTrainingData
from selftaught.local.runner import _run_stage
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.stage_process import run_stage
from selftaught.store.layout import PAIRS_HELDOUT, PAIRS_TRAIN, SELECTED, metrics_output, progress_key, sft_output
from selftaught.store.manifest import published_key, read_manifest
from selftaught.store.progress import read_progress
from tests.stores import read_output

REPO = Path(__file__).resolve().parents[2]


def read_jsonl_all(store, prefix):
    return [json.loads(line) for key in sorted(store.list(prefix)) if key.endswith(".jsonl") for line in store.read_text(key).splitlines()]


def _prepare_pairs(run):
    for name in ("categorize", "select", "pairs"):
        run_stage(run, StageRef(name))


def test_categorize_select_and_pairs_build_preference_pairs_in_s3(make_run, bucket, s3_server, monkeypatch):
    from selftaught.stages.shard_progress import SampleMeter

    finished = []  # what vLLM reported, request by request, to the shards' progress
    counted = SampleMeter.finished
    monkeypatch.setattr(SampleMeter, "finished", lambda meter, samples: (finished.append(samples), counted(meter, samples)))
    run = make_run(storage=bucket, endpoint=s3_server)
    _prepare_pairs(run)
    store = open_run_store(run)
    assert store.uri.startswith("s3://") and store.uri.endswith("/tests/test")
    categorized = read_manifest(store, StageRef("categorize").manifest_key)
    assert categorized.summary["instructions"] == 50 and categorized.summary["categorized"] >= 45
    selected = read_output(store, SELECTED)
    assert selected and {r["category"] for r in selected} <= {"Knowledge and Reasoning", "Mathematical reasoning"}
    pairs = read_output(store, PAIRS_TRAIN)
    heldout = read_output(store, PAIRS_HELDOUT)
    assert len(pairs) + len(heldout) + read_manifest(store, StageRef("pairs").manifest_key).counts.get("unparsed", 0) == len(selected)
    assert pairs and all(p["chosen"] != p["rejected"] and p["modified_instruction"] for p in pairs)
    assert heldout and set(heldout[0]) == {"id", "prompt", "chosen", "rejected", "subset"}
    manifest = read_manifest(store, StageRef("pairs").manifest_key)
    train_key = published_key(store, *PAIRS_TRAIN)
    assert manifest.outputs[train_key]["records"] == len(pairs) and len(manifest.outputs[train_key]["sha256"]) == 64
    # each shard said how far it was as it went (vLLM told of each request it finished), and ended whole
    assert set(finished) == {1} and len(finished) >= 50 + len(selected)
    progress = read_progress(store, progress_key(StageRef("pairs").prefix, 0))
    assert progress.finished and progress.done == progress.total == 2 * len(selected)
    assert progress.tokens == manifest.counts["tokens"] > 0 and progress.working_since >= progress.started_at


def test_a_generation_stage_resumes_from_its_last_finished_shard(make_run):
    run = make_run(generation={"shards": 3})
    store = open_run_store(run)
    ref = StageRef("categorize")
    assert run_stage(run, ref, shards=[1]) is None  # other shards pending: no stage manifest yet
    assert [store.exists(ref.shard_manifest_key(s)) for s in range(3)] == [False, True, False]
    first = read_manifest(store, ref.shard_manifest_key(1))
    manifest = run_stage(run, ref)  # the local runner: every unfinished shard, then finalize
    assert manifest.shards == 3 and manifest.summary["instructions"] == 50
    assert read_manifest(store, ref.shard_manifest_key(1)).finished_at == first.finished_at  # not redone
    assert run_stage(run, ref).finished_at == manifest.finished_at  # a finished stage is a no-op


def test_judge_keeps_one_correct_judgment_per_item_balanced_between_a_and_b(make_run):
    run = make_run(judge={"samples": 6, "firstRound": 1})
    _prepare_pairs(run)
    manifest = run_stage(run, StageRef("judge", 1))
    store = open_run_store(run)
    records = read_output(store, sft_output(1))
    pairs = read_output(store, PAIRS_TRAIN)
    summary = manifest.summary
    assert summary["tried"] == 2 * len(pairs)  # both orders
    assert 0 < summary["kept"] <= summary["tried"]
    winners = [r["winner"] for r in records]
    assert winners.count("A") == winners.count("B") == len(records) // 2
    assert all(f"[[{r['winner']}]]" in r["completion"] for r in records)
    assert all(r["messages"][0]["role"] == "system" and "[User Question]" in r["messages"][1]["content"] for r in records)
    assert len({r["id"] for r in records}) == len(records)  # one judgment per (pair, order)
    assert summary["tokensPerKept"] < summary["fixedNTokensPerKept"]  # adaptive sampling stopped early


def test_training_with_deepspeed_zero3_on_two_processes_gives_a_checkpoint_vllm_evaluates(make_run, tmp_path):
    evaluation = {"source": str(REPO / "examples/data/rewardbench-sample.jsonl")}
    run = make_run(
        train={"zeroStage": 3, "gpusPerNode": 2, "packing": True},  # packed sequences, sharded weights
        data={"evaluation": evaluation},
        evaluate={"majorityVote": 3},
    )
    _prepare_pairs(run)
    judged = run_stage(run, StageRef("judge", 1))
    assert judged.summary["tokensPerSecondPerGpu"] > 0 and judged.counts["generated_tokens"] == judged.counts["tokens"]
    (tmp_path / "scratch").mkdir()
    _run_stage(run, StageRef("train", 1), tmp_path, tmp_path / "scratch")  # torchrun --nproc-per-node 2, gloo
    store = open_run_store(run)
    trained = read_manifest(store, StageRef("train", 1).manifest_key)
    checkpoint = Path(store.url(trained.summary["checkpoint"]))  # store-relative
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in checkpoint.iterdir()}
    assert "chat_template" in json.loads((checkpoint / "tokenizer_config.json").read_text()) or (checkpoint / "chat_template.jinja").exists()
    assert trained.counts["examples"] > 0 and trained.counts["steps"] >= 1
    assert trained.summary["tokensPerSecondPerGpu"] > 0 and trained.counts["gradient_checkpointing"] == 0  # CPU: memory is no limit
    evaluated = run_stage(run, StageRef("evaluate", 1))
    metrics = json.loads(store.read_text(published_key(store, *metrics_output(1))))
    assert metrics["examples"] == 8 and set(metrics["sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
    assert metrics["overall"] == pytest.approx(sum(metrics["sections"].values()) / 4) and metrics["missing"] == []
    assert metrics["partial"] and evaluated.summary["partial"]  # 8 examples leave most subsets out: said so
    assert metrics["position_consistent"] is not None and metrics["majority_vote"]["examples"] == 8
    assert evaluated.summary["overall"] == round(metrics["overall"], 4) and evaluated.summary["evaluated"] == "RewardBench"
    assert evaluated.summary["overallInterval"] == [round(metrics["intervals"]["overall"][end], 4) for end in ("low", "high")]
    assert set(metrics["outcomes"]) == {record["id"] for record in read_jsonl_all(store, "iter-001/evaluate/")}  # per example, for the report's paired test
    # the stage's numbers are what `selftaught score` prints for the outputs it wrote
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text("".join(store.read_text(key) for key in sorted(store.list("iter-001/evaluate/")) if key.endswith(".jsonl")))
    scored = subprocess.run([sys.executable, "-m", "selftaught", "score", str(outputs), "--json"], capture_output=True, text=True, check=True)
    assert json.loads(scored.stdout)["overall"] == pytest.approx(metrics["overall"])


def test_a_judge_that_never_finds_a_correct_verdict_fails_with_no_training_data_and_keeps_the_pairs(
    make_run, untrained_model, bucket, s3_server
):
    run = make_run(
        storage=bucket, endpoint=s3_server,
        models={"seed": {"source": str(untrained_model)}, "generator": {"source": make_run().spec.models.seed.source}},
        judge={"samples": 2},
    )  # fmt: skip
    _prepare_pairs(run)
    with pytest.raises(NoTrainingData, match="no correct verdict for any of .* items"):
        run_stage(run, StageRef("judge", 1))
    store = open_run_store(run)
    assert read_output(store, PAIRS_TRAIN)  # the pairs survive in S3
    assert store.exists(StageRef("judge", 1).shard_manifest_key(0)) and not store.exists(StageRef("judge", 1).manifest_key)


def test_rewardbench2_is_evaluated_in_rating_mode_with_its_six_subsets(make_run, tmp_path):
    rows = [
        {"id": str(i), "prompt": f"What is {i} plus {i}?", "chosen": [f"{2 * i}."], "rejected": [f"{2 * i + 1}.", f"{i}.", "I do not know."],
         "num_correct": 1, "subset": subset}
        for i, subset in enumerate(["Factuality", "Precise IF", "Math", "Safety", "Focus"])
    ] + [
        {"id": f"{kind}:0", "prompt": "Name a primary colour.", "chosen": chosen, "rejected": ["Green is a primary colour of paint."],
         "num_correct": len(chosen), "subset": "Ties"}
        for kind, chosen in (("ref", ["Red."]), ("tied", ["Red.", "Blue.", "Yellow."]))
    ]  # fmt: skip
    source = tmp_path / "rb2.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = make_run(data={"evaluation": {"source": str(source)}}, evaluate={"benchmark": "rewardbench2", "maxTokens": 16})
    manifest = run_stage(run, StageRef("evaluate", 0))  # the seed judge; needs no other stage
    metrics = json.loads(open_run_store(run).read_text(published_key(open_run_store(run), *metrics_output(0))))
    assert metrics["benchmark"] == "rewardbench2" and metrics["examples"] == 7
    assert set(metrics["subsets"]) == {"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"} and not metrics["partial"]
    assert metrics["overall"] == pytest.approx(sum(metrics["sections"].values()) / 6)  # Ties: its own official score
    assert manifest.summary["overall"] == round(metrics["overall"], 4)


def test_a_majority_vote_that_stops_once_decided_scores_exactly_as_drawing_all_k(make_run):
    """vLLM on the tiny model: with a seed per sample, the early-stopped vote draws a prefix of the
    full vote's samples, scores the same, and says what it saved."""
    evaluation = {"source": str(REPO / "examples/data/rewardbench-sample.jsonl")}
    settings = {"majorityVote": 9, "positionConsistency": False, "maxTokens": 16}
    results = {}
    for mode in ("off", "exact"):
        run = make_run(name=f"vote-{mode}", data={"evaluation": evaluation}, evaluate={**settings, "earlyStop": mode})
        manifest = run_stage(run, StageRef("evaluate", 0))
        store = open_run_store(run)
        metrics = json.loads(store.read_text(published_key(store, *metrics_output(0))))
        records = [json.loads(line) for key in sorted(store.list("iter-000/evaluate/")) if key.endswith(".jsonl") for line in store.read_text(key).splitlines()]
        results[mode] = manifest, metrics, {r["id"]: r["outputs"] for r in records}
    (full, full_metrics, full_outputs), (exact, exact_metrics, exact_outputs) = results["off"], results["exact"]
    for example, outputs in exact_outputs.items():
        assert outputs == full_outputs[example][: len(outputs)] and len(full_outputs[example]) == 9
    for key in ("accuracy", "subsets", "sections", "overall"):
        assert exact_metrics["majority_vote"][key] == full_metrics["majority_vote"][key]
    assert exact.summary["majorityVote"] == full.summary["majorityVote"]
    assert exact_metrics["vote"]["samples_all_k"] == full_metrics["vote"]["samples"] == 8 * 9
    assert exact_metrics["vote"]["samples"] == sum(len(o) for o in exact_outputs.values()) < 8 * 9
    assert exact.summary["voteTokensSaved"] > 0 == full.summary["voteTokensSaved"]
    assert exact.summary["voteSamplesPerExample"] < 9 == full.summary["voteSamplesPerExample"]
