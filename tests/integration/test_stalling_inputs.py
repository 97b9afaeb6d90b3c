"""Inputs that used to stall or mislead a run: an empty or all-bad instructions file, one pair and
nothing held out, a record too long for the model, a broken evaluation source, skipped records
nobody saw. Each is now an error at the stage that sees it — one sentence naming the file (and
line, and field), permanent so no retry is wasted — or a count that the status and the summary
show; and the corrected spec is accepted and runs.

The stages run on a scripted engine (the stage code is what is shown, not vLLM); one test runs
`selftaught run` on the tiny model end to end."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from selftaught.api.load import parse_run
from selftaught.chat import Sample
from selftaught.controller.status import Observation, build_status, status_document
from selftaught.errors import EmptyDataset, InvalidInput, failure_of
from selftaught.method.prompts import MODIFIED_ANSWER_END, MODIFIED_ANSWER_START, MODIFIED_QUESTION_MARKER
from selftaught.pipeline.planner import plan
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.scan import scan, skipped_counts
from selftaught.pipeline.table import StageRef
from selftaught.stage_process import run_stage
from selftaught.stages import IMPLEMENTATIONS, StageContext, execute
from selftaught.store.layout import PAIRS_HELDOUT
from selftaught.store.manifest import read_manifest
from selftaught.views.overview import skipped_summary
from tests.conftest import QUICK_SPEC, REPO, _merge
from tests.stores import publish

#: an instruction the tiny model files under a reasoning category, whose pair is not held out at seed 0
QUESTION = "Why does ice float on water even though it is a solid?"
HUGE = "Tell me everything about water. " * 33_000  # ~1 MB


class FakeModel:
    """A ChatEngine that speaks every stage's format, a token per word, with a context of
    `context` tokens; `baseline` is its answer to a plain question."""

    def __init__(self, context=4096, baseline="The answer: because it is less dense."):
        self.max_model_len, self.baseline, self.calls = context, baseline, 0

    def prompt_tokens(self, conversations):
        return [sum(len(m["content"].split()) for m in c) for c in conversations]

    def chat(self, conversations, sampling, seeds=None):
        self.calls += 1
        return [[Sample(self._answer(c[-1]["content"]), 8)] * sampling.n for c in conversations]

    def _answer(self, prompt):
        if prompt.startswith("Below is a user question"):
            return "Category: Knowledge and Reasoning\nComplexity: 6\nLength: (b)"
        if MODIFIED_QUESTION_MARKER in prompt:
            return f"{MODIFIED_QUESTION_MARKER}\nWhy does iron sink?\n\n{MODIFIED_ANSWER_START}\nIt is dense.\n{MODIFIED_ANSWER_END}"
        if "[The Start of Assistant A's Answer]" in prompt:
            return "A is better. [[A]]"
        return self.baseline


def no_model(ctx, model):
    raise AssertionError("this stage should have failed before loading a model")


def _run(tmp_path, **spec):
    base = {
        **QUICK_SPEC,
        "models": {"seed": {"source": "tiny"}},
        "data": {"instructions": {"source": str(tmp_path / "instructions.jsonl")}, "evaluation": {"heldOutFraction": 0.2}},
        "storage": {"uri": str(tmp_path / "store")},
        "iterations": 1,
    }
    document = {"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "stall", "namespace": "tests"}}
    return parse_run({**document, "spec": _merge(base, spec)})


def _lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _stage(run, name, engine, iteration=0, shards=None):
    """Run stage `name` of `run` as its process would, on `engine` (a factory for no_model)."""
    ref = StageRef(name, iteration)
    make = engine if callable(engine) and not hasattr(engine, "chat") else (lambda ctx, model: engine)
    count = run.spec.generation.shards if ref.sharded else 1
    ctx = StageContext(run=run, stage=ref, store=open_run_store(run), num_shards=count, make_engine=make)
    return execute(IMPLEMENTATIONS[name], ctx, shards)


# -- zero usable instructions ----------------------------------------------------------------------


def test_an_empty_instructions_file_fails_categorize_naming_it_and_the_fixed_spec_then_runs(tmp_path):
    empty = _lines(tmp_path / "empty.jsonl")
    run = _run(tmp_path, data={"instructions": {"source": str(empty)}}, generation={"shards": 2})
    store = open_run_store(run)
    accept(store, run)
    for shard in (0, 1):  # every shard reads the whole input, so each one knows
        with pytest.raises(EmptyDataset) as raised:
            _stage(run, "categorize", no_model, shards=[shard])
        assert str(raised.value) == f"data.instructions.source {empty} has no instruction to categorize: it holds no records"
        assert failure_of(raised.value).permanent
    assert scan(store).shards_done == {} and scan(store).done == frozenset()  # nothing claims to be done

    fixed = _run(
        tmp_path, data={"instructions": {"source": str(_lines(tmp_path / "fixed.jsonl", {"instruction": QUESTION}))}}, generation={"shards": 2}
    )
    acceptance = accept(store, fixed)  # categorize produced nothing: the edit applies
    assert acceptance.refused == [] and acceptance.spec.data.instructions.source.endswith("fixed.jsonl")
    assert _stage(fixed, "categorize", FakeModel()).summary["categorized"] == 1


def test_when_every_record_is_skipped_the_error_says_how_many_and_why(tmp_path):
    bad = _lines(tmp_path / "bad.jsonl", '{"instruction": ', {"text": "no instruction field"})
    run = _run(tmp_path, data={"instructions": {"source": str(bad), "onBadRecord": "skip"}})
    with pytest.raises(EmptyDataset) as raised:
        _stage(run, "categorize", no_model)
    assert str(raised.value).startswith(
        f"data.instructions.source {bad} has no usable instruction to categorize: all 2 records were skipped under onBadRecord: skip; "
        f"the first: {bad}:1: malformed JSONL line"
    )
    assert f"{bad}:2: record has no non-empty text field 'instruction'" in str(raised.value)


# -- records too long for the model's context --------------------------------------------------------


def test_a_1mb_instruction_fails_categorize_naming_its_line_before_anything_is_generated(tmp_path):
    source = _lines(tmp_path / "instructions.jsonl", {"instruction": QUESTION}, {"instruction": HUGE}, {"instruction": "Why is the sky blue?"})
    engine = FakeModel()
    with pytest.raises(InvalidInput) as raised:
        _stage(_run(tmp_path), "categorize", engine)
    message = str(raised.value)
    assert message.startswith(f"{source}:2: too long for the model: its prompt is ") and "with categorize.maxTokens 24" in message
    assert "the model's context of 4096 tokens" in message and message.endswith(
        "or set data.instructions.onBadRecord: skip to pass over such records"
    )
    assert failure_of(raised.value).permanent and engine.calls == 0


def test_under_skip_an_over_long_instruction_is_counted_named_and_shown(tmp_path):
    source = _lines(tmp_path / "instructions.jsonl", {"instruction": QUESTION}, {"instruction": HUGE}, "not json")
    run = _run(tmp_path, data={"instructions": {"onBadRecord": "skip"}})
    manifest = _stage(run, "categorize", FakeModel())
    assert manifest.summary["instructions"] == 1 and manifest.summary["skipped"] == 2
    assert manifest.counts["too_long"] == 1 and manifest.counts["skipped_records"] == 2
    assert [r.split(":")[1] for r in manifest.skipped] == ["3", "2"]  # the reader's, then the context check's
    progress = scan(open_run_store(run))
    assert skipped_counts(progress) == {"categorize": 2}
    (line,) = skipped_summary(progress)  # what `selftaught run` prints
    assert line.startswith(f"categorize: 2 records skipped: {source}:3: malformed JSONL line") and f"{source}:2: too long for the model" in line
    status = status_document(
        build_status(Observation(generation=1, now="2026-01-01T00:00:00Z", previous={}, plan=plan(run.spec, progress.done), progress=progress))
    )
    assert status["skipped"] == {"categorize": 2}


def test_an_instruction_too_long_for_pairs_answer_prompt_is_caught_at_categorize_where_its_line_is_known(tmp_path):
    source = _lines(tmp_path / "instructions.jsonl", {"instruction": QUESTION}, {"instruction": "word " * 3000})
    with pytest.raises(InvalidInput, match=rf"^{source}:2: too long for the model: .* with pairs\.maxTokens 1200 .*context of 4096"):
        _stage(_run(tmp_path, pairs={"maxTokens": 1200}), "categorize", FakeModel())


def test_pairs_drops_a_prompt_that_its_own_answer_made_too_long_and_says_so(tmp_path):
    _lines(tmp_path / "instructions.jsonl", {"instruction": QUESTION})
    run = _run(tmp_path)
    engine = FakeModel(baseline="long " * 4050)  # y_w fits, the prompt for y_l (x and y_w) does not
    for name in ("categorize", "select"):
        _stage(run, name, engine)
    with pytest.raises(EmptyDataset, match="no usable response pair: 1 instructions, .*, 1 too long for the model's context"):
        _stage(run, "pairs", engine)


# -- nothing to evaluate -----------------------------------------------------------------------------


def test_duplicates_only_one_pair_nothing_held_out_fails_at_pairs_and_a_fixed_fraction_then_runs(tmp_path):
    _lines(tmp_path / "instructions.jsonl", *[{"instruction": QUESTION}] * 3)
    run = _run(tmp_path, data={"evaluation": {"heldOutFraction": 0.1}})
    store = open_run_store(run)
    accept(store, run)
    engine = FakeModel()
    for name in ("categorize", "select"):
        _stage(run, name, engine)
    with pytest.raises(EmptyDataset) as raised:
        _stage(run, "pairs", engine)
    assert str(raised.value) == (
        "data.evaluation.heldOutFraction 0.1 of 1 pair left no held-out pair to evaluate on; add instructions or give "
        "data.evaluation.source (or set heldOutFraction to 0 to train without evaluating)"
    )
    assert failure_of(raised.value).permanent and not read_manifest(store, StageRef("pairs").manifest_key)
    assert scan(store).shards_done[StageRef("pairs")] == 1  # the map's work is kept

    fixed = _run(tmp_path, data={"evaluation": {"heldOutFraction": 0.0}})
    assert accept(store, fixed).refused == []  # only pairs' reduce reads it, and pairs is not done
    calls = engine.calls
    manifest = _stage(fixed, "pairs", engine)  # the reduce only: no shard, no model
    assert manifest.summary["pairs"] == 1 and manifest.summary["heldOut"] == 0 and engine.calls == calls


def test_an_evaluation_with_no_examples_is_an_error_never_an_accuracy(tmp_path):
    run = _run(tmp_path)
    store = open_run_store(run)
    publish(store, PAIRS_HELDOUT, [])  # a store from before pairs checked this
    with pytest.raises(EmptyDataset, match=r"^the held-out pairs \(pairs/heldout\.jsonl\) has no example to evaluate: it holds no records$"):
        _stage(run, "evaluate", no_model)
    assert not scan(store).done & {StageRef("evaluate", 0)}


def _rewardbench(path, *prompts):
    rows = [{"prompt": p, "chosen": "good answer", "rejected": "bad answer", "subset": "alpacaeval-easy"} for p in prompts]
    return _lines(path, *rows)


def test_an_evaluation_pair_too_long_for_the_judge_fails_naming_its_line_or_is_skipped_and_counted(tmp_path):
    source = _rewardbench(tmp_path / "rewardbench.jsonl", QUESTION, "word " * 5000, "Why is the sky blue?")
    run = _run(tmp_path, data={"evaluation": {"source": str(source)}})
    with pytest.raises(
        InvalidInput, match=rf"^{source}:2: too long for the model: .* with evaluate\.maxTokens 24 .* set data\.evaluation\.onBadRecord: skip"
    ):
        _stage(run, "evaluate", FakeModel())

    skipping = _run(tmp_path, data={"evaluation": {"source": str(source), "onBadRecord": "skip"}}, generation={"shards": 2})
    manifest = _stage(skipping, "evaluate", FakeModel())
    assert manifest.summary["examples"] == 2 and manifest.summary["skipped"] == 1
    assert len(manifest.skipped) == 1 and manifest.skipped[0].startswith(f"{source}:2: too long for the model: its prompt is ")
    assert skipped_counts(scan(open_run_store(skipping))) == {"evaluate-0": 1}


def test_an_evaluation_set_whose_every_pair_is_too_long_is_an_error_not_an_accuracy(tmp_path):
    source = _rewardbench(tmp_path / "rewardbench.jsonl", "word " * 5000)
    run = _run(tmp_path, data={"evaluation": {"source": str(source), "onBadRecord": "skip"}})
    with pytest.raises(EmptyDataset, match=rf"data\.evaluation\.source {source} has no usable example to evaluate: all 1 records"):
        _stage(run, "evaluate", FakeModel())


# -- the evaluation source is checked before the first stage -----------------------------------------


@pytest.mark.parametrize(
    "rows, benchmark, on_bad, error, message",
    [
        (None, "rewardbench", "fail", InvalidInput, "data.evaluation.source: {path}: no such file or folder"),
        (['{"prompt": "q", "chosen": "a", "rejected": "b"}', '{"prompt": '], "rewardbench", "fail", InvalidInput,
         "data.evaluation.source: {path}:2: malformed JSONL line"),
        (['{"prompt": "q", "chosen": "a", "rejected": "b"}'], "judgebench", "fail", InvalidInput,
         "data.evaluation.source: {path}:1: JudgeBench record is missing question, response_A, response_B, source"),
        (['{"prompt": "q", "chosen": "a"}'], "rewardbench", "skip", EmptyDataset,
         "data.evaluation.source {path} has no usable rewardbench example: all 1 records were skipped under onBadRecord: skip; "
         "the first: {path}:1: evaluation record is missing rejected"),
        ([], "rewardbench", "fail", EmptyDataset, "data.evaluation.source {path} has no rewardbench example: it holds no records"),
    ],
)  # fmt: skip
def test_a_broken_evaluation_source_fails_the_first_stage_naming_file_and_line(tmp_path, rows, benchmark, on_bad, error, message):
    _lines(tmp_path / "instructions.jsonl", {"instruction": QUESTION})
    path = tmp_path / "eval.jsonl"
    if rows is not None:
        _lines(path, *rows)
    run = _run(tmp_path, data={"evaluation": {"source": str(path), "onBadRecord": on_bad}}, evaluate={"benchmark": benchmark})
    with pytest.raises(error) as raised:
        _stage(run, "categorize", no_model)  # before any model is loaded
    assert str(raised.value).startswith(message.format(path=path)) and failure_of(raised.value).permanent


# -- end to end, on the tiny model ------------------------------------------------------------------


def _selftaught_run(tmp_path, run, name):
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))
    done = subprocess.run(
        [sys.executable, "-m", "selftaught", "run", str(manifest), "--logs", str(tmp_path / f"logs-{name}")],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_selftaught_run_says_why_bad_inputs_stop_it_and_runs_the_corrected_spec(make_run, tmp_path):
    empty = _lines(tmp_path / "empty.jsonl")
    first = make_run(data={"instructions": {"source": str(empty)}})
    code, output = _selftaught_run(tmp_path, first, "empty")
    assert code != 0 and f"reason EmptyDataset: data.instructions.source {empty} has no instruction to categorize: it holds no records" in output
    termination = tmp_path / "termination.json"  # what a pod tells the operator: permanent, so no retries
    stage = subprocess.run(
        [sys.executable, "-m", "selftaught", "stage", "categorize", "--run", str(tmp_path / "empty.yaml")],
        env={**os.environ, "SELFTAUGHT_TERMINATION_MESSAGE_PATH": str(termination)}, capture_output=True, timeout=300,
    )  # fmt: skip
    assert stage.returncode == 3 and json.loads(termination.read_text())["reason"] == "EmptyDataset"

    duplicates = _lines(tmp_path / "duplicates.jsonl", *[{"instruction": QUESTION}] * 2, {"instruction": HUGE}, "{broken", {"instruction": QUESTION})
    second = make_run(data={"instructions": {"source": str(duplicates), "onBadRecord": "skip"}})
    code, output = _selftaught_run(tmp_path, second, "duplicates")  # accepted: categorize had produced nothing
    assert code != 0 and "cannot change" not in output
    assert "reason EmptyDataset: data.evaluation.heldOutFraction 0.2 of 1 pair left no held-out pair" in output, output
    store = open_run_store(second)
    categorized = read_manifest(store, StageRef("categorize").manifest_key)
    assert categorized.summary["instructions"] == 3 and categorized.summary["skipped"] == 2
    assert any(r.startswith(f"{duplicates}:3: too long for the model: its prompt is ") and "context of 2048 tokens" in r for r in categorized.skipped)
    assert any(r.startswith(f"{duplicates}:4: malformed JSONL line") for r in categorized.skipped)
    assert skipped_summary(scan(store))[0].startswith("categorize: 2 records skipped: ")

    third = make_run(data={"instructions": {"source": str(duplicates), "onBadRecord": "skip"}, "evaluation": {"heldOutFraction": 0.0}})
    acceptance = accept(store, third)
    assert acceptance.refused == []  # pairs has not finished: its reduce takes the new fraction
    pairs = run_stage(third.model_copy(update={"spec": acceptance.spec}), StageRef("pairs"))
    assert pairs.summary["pairs"] == 1 and pairs.summary["heldOut"] == 0
