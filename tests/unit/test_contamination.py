"""The contamination guard: a run whose instructions hold its evaluation set's prompts — as they
are, re-spaced, re-cased or slightly reworded — trains without them, says how many it dropped
before any model loads (`selftaught plan`), and keeps the count in select's manifest."""

from __future__ import annotations

import json

from selftaught.api.load import parse_run
from selftaught.method.contamination import EvaluationPrompts
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.stage_process import run_stage
from selftaught.store.jsonl import read_jsonl
from selftaught.store.layout import CATEGORIZED, SELECTED
from selftaught.store.manifest import Manifest, published_key, read_manifest, write_manifest
from selftaught.views.estimate import estimate
from selftaught.views.plan_text import format_plan, plan_inputs

#: RewardBench-format evaluation prompts (long enough to be matched other than exactly, but the last)
PROMPTS = [
    "Explain why the sky appears blue during the day but red and orange at sunset, in terms a ten year old would follow.",
    "Write a Python function that returns the longest palindromic substring of a string, and state its time complexity.",
    "A train leaves Chicago at 3 pm travelling at 60 miles per hour; another leaves at 4 pm at 80. When does the second catch up?",
    "Summarise the main causes of the French Revolution in no more than five bullet points for a history class.",
    "Name three primes.",
]
#: how each evaluation prompt hides in the instructions
SPIKED = [
    "  EXPLAIN why the SKY appears blue during the day,   but red and orange at sunset -- in terms a ten-year-old would follow!  ",
    "Write a Python function that returns the longest palindromic substring of a given string, and state its time complexity.",
    "Please help me with my homework. A train leaves Chicago at 3 pm travelling at 60 miles per hour; another leaves at 4 pm at 80. "
    "When does the second catch up? Show your steps.",
    "Summarize the main causes of the French Revolution in no more than five bullet points for a history class.",
    "name three PRIMES",
]
#: instructions that only look alike: a shared template, another topic
CLEAN = [
    "Name three mammals.",
    "Explain why the ocean appears blue.",
    "Write a Python function that returns the shortest path between two nodes of a weighted graph using Dijkstra's algorithm.",
    "Summarise the main causes of the First World War in no more than five bullet points for a history class, with dates.",
    "What is the capital of Australia, and why is it not Sydney?",
]


def test_re_spaced_re_cased_reworded_and_embedded_prompts_match_and_look_alikes_do_not():
    prompts = EvaluationPrompts(PROMPTS)
    matches = [prompts.match(text) for text in SPIKED]
    assert [(m.kind, m.prompt) if m else None for m in matches] == [("exact", 0), ("near", 1), ("near", 2), ("near", 3), ("exact", 4)]
    assert all(m.similarity >= 0.5 for m in matches)
    # "Summarize" for "Summarise", the first of 19 words: 1 of its 17 word 3-grams changes; 16 of 17 inside
    assert matches[3].similarity == 16 / 17
    # a word inserted ("a given string"): 14 of the prompt's 16 3-grams remain (Jaccard 14/19, 14/16 inside)
    assert matches[1].similarity == 14 / 16
    assert [prompts.match(text) for text in CLEAN] == [None] * len(CLEAN)
    assert prompts.match("") is None and prompts.match("???") is None


def _spiked_run(tmp_path, decontaminate="drop"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    evaluation = tmp_path / "rewardbench.jsonl"
    evaluation.write_text("".join(json.dumps({"id": str(i), "subset": "alpacaeval-easy", "prompt": p, "chosen": "yes", "rejected": "no"}) + "\n" for i, p in enumerate(PROMPTS)))
    instructions = tmp_path / "instructions.jsonl"
    texts = CLEAN + SPIKED
    instructions.write_text("".join(json.dumps({"instruction": text}) + "\n" for text in texts))
    run = parse_run({
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "spiked", "namespace": "local"},
        "spec": {"models": {"seed": {"source": "tiny-judge"}}, "storage": {"uri": str(tmp_path / "runs")}, "iterations": 1,
                 "data": {"instructions": {"source": str(instructions)}, "evaluation": {"source": str(evaluation)}, "decontaminate": decontaminate},
                 "select": {"minComplexity": 1, "categories": ["Knowledge and Reasoning"]}},
    })  # fmt: skip
    # categorize's output, as the stage leaves it: every instruction, categorized
    store = open_run_store(run)
    key = "categorize/shard-00000.jsonl"
    store.write_text(key, "".join(json.dumps({"id": f"i{n}", "instruction": t, "category": "Knowledge and Reasoning", "complexity": 5}) + "\n" for n, t in enumerate(texts)))
    write_manifest(store, CATEGORIZED, Manifest(stage="categorize", outputs={key: {}}, summary={"instructions": len(texts)}))
    return run, store


def test_select_drops_the_instructions_that_hold_evaluation_prompts_and_counts_them(tmp_path):
    run, store = _spiked_run(tmp_path)
    manifest = run_stage(run, StageRef("select"))
    kept = [r["instruction"] for r in read_jsonl(store, published_key(store, *SELECTED))]
    assert sorted(kept) == sorted(CLEAN)
    assert manifest.summary["selected"] == 5 and manifest.summary["decontaminated"] == 5
    assert (manifest.counts["contaminated_exact"], manifest.counts["contaminated_near"], manifest.counts["contamination_checked"]) == (2, 3, 10)
    assert manifest.summary["contaminationExamples"][0] == "i5: exact match of evaluation prompt 0 (1.00)"
    assert read_manifest(store, StageRef("select").manifest_key).summary["decontaminated"] == 5


def test_warn_keeps_them_and_says_so_and_off_does_not_look(tmp_path):
    run, store = _spiked_run(tmp_path / "warn", "warn")
    manifest = run_stage(run, StageRef("select"))
    assert manifest.summary["selected"] == 10 and manifest.summary["contaminated"] == 5
    run, store = _spiked_run(tmp_path / "off", "off")
    manifest = run_stage(run, StageRef("select"))
    assert manifest.summary == {"selected": 10} and "contamination_checked" not in manifest.counts


def test_the_plan_counts_them_before_any_model_loads(tmp_path):
    run, _ = _spiked_run(tmp_path)
    text = format_plan(run.metadata.name, estimate(run.spec, plan_inputs(run)), "on a cluster")
    assert "contamination: 5 of 10 instructions match the evaluation set (2 exact, 3 near): dropped from training by select" in text
    warn, _ = _spiked_run(tmp_path / "warn", "warn")
    assert "(2 exact, 3 near): kept (data.decontaminate: warn)" in format_plan("w", estimate(warn.spec, plan_inputs(warn)), "here")


def test_status_and_the_report_state_how_many_were_removed(tmp_path):
    from selftaught.pipeline.scan import scan
    from selftaught.views.html_report import collect
    from selftaught.views.overview import describe_stage

    run, store = _spiked_run(tmp_path)
    run_stage(run, StageRef("select"))
    progress = scan(store)
    assert describe_stage(StageRef("select"), progress).startswith("selected 5, decontaminated 5 (")
    data = collect(store, run, progress, estimate(run.spec, plan_inputs(run)))
    assert data.contamination == "Contamination: 5 of 10 instructions matched the evaluation set and were removed before training."
