"""Which edits a started run accepts: an edit applies while the first stage that depends on the
field has produced nothing (a stage that failed with nothing produced can be fixed by editing the
spec), and is refused, by field name, once it has; a damaged `run.json` is one sentence naming it."""

import typing

import pytest
from pydantic import BaseModel

from selftaught.api.changes import DEPENDS, depends_on, row_of
from selftaught.api.load import parse_run
from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.controller.decide import JobView, running_stages
from selftaught.errors import failure_of
from selftaught.pipeline.runstore import SnapshotUnreadable, accept
from selftaught.pipeline.table import STAGE_NAMES, StageRef
from selftaught.store import LocalStore
from selftaught.store.layout import RUN_SNAPSHOT
from selftaught.store.manifest import Manifest, write_manifest

from .test_spec import MINIMAL


def _run(**spec):
    merged = {**MINIMAL["spec"], **spec}
    return parse_run({**MINIMAL, "metadata": {"name": "r", "namespace": "ml"}, "spec": merged})


def _data(instructions=MINIMAL["spec"]["data"]["instructions"]["source"], **evaluation):
    return {"instructions": {"source": instructions}, "evaluation": evaluation}


def _finish(store, ref):
    write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration))


def _finish_shard(store, ref, shard=0):
    write_manifest(store, ref.shard_manifest_key(shard), Manifest(stage=ref.name, iteration=ref.iteration, shard=shard))


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of the spec by its camelCase path, down to the leaves."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        nested = [t for t in typing.get_args(info.annotation) or (info.annotation,) if isinstance(t, type) and issubclass(t, BaseModel)]
        paths += _leaf_paths(nested[0], path + ".") if nested else [path]
    return paths


def test_every_spec_field_says_which_stage_first_depends_on_it():
    fields = _leaf_paths(SelfTaughtRunSpec)
    assert len(fields) > 60 and [path for path in fields if row_of(path) is None] == []
    assert {d.stage for d in DEPENDS.values()} - {None} == set(STAGE_NAMES)
    assert depends_on("data.instructions.source").stage == "categorize" and depends_on("select.minComplexity").stage == "select"
    assert depends_on("data.evaluation.heldOutFraction").reduce_only and depends_on("scheduling.generation.image").stage is None


def test_a_stage_that_failed_with_nothing_produced_takes_the_corrected_spec(tmp_path):
    store = LocalStore(tmp_path)
    first = _run(data=_data("s3://bucket/empty.jsonl"))
    assert accept(store, first).refused == []
    fixed = _run(data=_data("s3://bucket/fixed.jsonl"), categorize={"maxTokens": 32}, judge={"samples": 4})
    acceptance = accept(store, fixed)  # categorize failed: no marker, no shard, nothing to contradict
    assert acceptance.refused == [] and acceptance.spec == fixed.spec
    assert accept(store, fixed).spec.data.instructions.source == "s3://bucket/fixed.jsonl"  # recorded in run.json


def test_a_finished_shard_is_output_an_edit_would_contradict(tmp_path):
    store = LocalStore(tmp_path)
    run = _run(generation={"shards": 2})
    accept(store, run)
    _finish_shard(store, StageRef("categorize"), 1)
    acceptance = accept(store, _run(generation={"shards": 2}, data=_data("s3://bucket/other.jsonl")))
    assert acceptance.refused == ["data.instructions.source"] and acceptance.spec == run.spec
    assert "cannot change after the run started" in acceptance.refusal and "data.instructions.source" in acceptance.refusal


def test_the_fix_a_bad_record_error_suggests_applies_even_when_other_shards_are_done(tmp_path):
    store = LocalStore(tmp_path)
    run = _run(generation={"shards": 4})
    accept(store, run)
    for shard in (0, 1, 2):  # finished under `fail`: they met no bad record; shard 3 failed on one
        _finish_shard(store, StageRef("categorize"), shard)
    skipping = {"source": MINIMAL["spec"]["data"]["instructions"]["source"], "onBadRecord": "skip"}
    acceptance = accept(store, _run(generation={"shards": 4}, data={"instructions": {**skipping, "limit": 5}}))
    assert acceptance.refused == ["data.instructions.limit"] and acceptance.spec.data.instructions.on_bad_record == "skip"
    assert acceptance.spec.data.instructions.limit is None
    assert accept(store, run).refused == ["data.instructions.onBadRecord"]  # skip -> fail would contradict the skips


def test_once_a_stage_is_done_its_fields_are_locked_and_later_stages_fields_are_not(tmp_path):
    store = LocalStore(tmp_path)
    run = _run()
    accept(store, run)
    _finish(store, StageRef("categorize"))
    edited = _run(data=_data("s3://bucket/other.jsonl"), select={"minComplexity": 1, "totalCap": 10}, iterations=2)
    acceptance = accept(store, edited)
    assert acceptance.refused == ["data.instructions.source"]
    assert acceptance.spec.select.total_cap == 10 and acceptance.spec.iterations == 2  # a mixed edit applies its part
    assert acceptance.spec.data.instructions.source == run.spec.data.instructions.source


def test_what_only_pairs_reduce_reads_can_change_while_its_shards_are_done_but_it_is_not(tmp_path):
    store = LocalStore(tmp_path)
    run = _run()
    accept(store, run)
    for name in ("categorize", "select"):
        _finish(store, StageRef(name))
    _finish_shard(store, StageRef("pairs"))
    edited = _run(data=_data(heldOutFraction=0.0), pairs={"maxTokens": 64})
    acceptance = accept(store, edited)
    assert acceptance.refused == ["pairs.maxTokens"] and acceptance.spec.data.evaluation.held_out_fraction == 0.0
    # an evaluation source now would score the judge on prompts select never checked the training
    # instructions against (data.decontaminate): refused once select is done
    with_source = _run(data=_data(source="s3://bucket/rewardbench.jsonl"))
    assert accept(store, with_source).refused == ["data.evaluation.source"]


def test_iteration_stages_fields_apply_until_that_stage_has_output(tmp_path):
    store = LocalStore(tmp_path)
    accept(store, _run())
    for ref in (StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("evaluate", 0)):
        _finish(store, ref)
    acceptance = accept(store, _run(judge={"samples": 4}, evaluate={"maxTokens": 64}))
    assert acceptance.refused == ["evaluate.maxTokens"] and acceptance.spec.judge.samples == 4  # evaluate-0 is done
    _finish_shard(store, StageRef("judge", 1))
    assert accept(store, _run(judge={"samples": 6})).refused == ["judge.samples"]


def test_a_stage_running_with_the_recorded_spec_counts_as_output_for_the_operator(tmp_path):
    store = LocalStore(tmp_path)
    accept(store, _run())
    job = JobView(name="r-categorize-0", stage="categorize", attempt=0, state="active")
    busy = running_stages([job, JobView(name="x", stage="not-a-stage", attempt=0, state="active")])
    assert busy == {StageRef("categorize")}
    edited = _run(categorize={"maxTokens": 32})
    assert accept(store, edited, busy=busy).refused == ["categorize.maxTokens"]
    assert accept(store, edited).refused == []  # once the Job is gone and left nothing, it applies


def test_credentials_and_placement_can_change_at_any_time(tmp_path):
    store = LocalStore(tmp_path)
    accept(store, _run())
    for ref in (StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("judge", 1), StageRef("train", 1)):
        _finish(store, ref)
    edited = _run(
        models={**MINIMAL["spec"]["models"], "hfTokenSecret": "hf"},
        storage={**MINIMAL["spec"]["storage"], "credentialsSecret": "s3"},
        scheduling={"training": {"priorityClassName": "high"}},
        retries={"perStage": 5},
    )
    assert accept(store, edited).refused == []


@pytest.mark.parametrize(
    "content, problem",
    [(b"{not json", "is not the JSON document selftaught writes"), (b"\xff\xfe\x00garbage", "is not the JSON document"),
     (b"[1, 2]", "holds no run spec"), (b'{"metadata": {}}', "holds no run spec")],
)  # fmt: skip
def test_a_damaged_run_json_is_one_sentence_naming_it(tmp_path, content, problem):
    store = LocalStore(tmp_path)
    store.write_bytes(RUN_SNAPSHOT, content)
    with pytest.raises(SnapshotUnreadable) as raised:
        accept(store, _run())
    message = str(raised.value)
    assert message.startswith(f"{store.url(RUN_SNAPSHOT)} ") and problem in message and "\n" not in message
    assert failure_of(raised.value).reason == "SnapshotUnreadable" and failure_of(raised.value).permanent


def test_fewer_iterations_apply_until_a_later_iteration_has_output(tmp_path):
    store = LocalStore(tmp_path)
    run = _run(iterations=3)
    accept(store, run)
    for ref in (StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("judge", 1), StageRef("train", 1)):
        _finish(store, ref)
    assert accept(store, _run(iterations=2)).spec.iterations == 2  # iteration 2 has nothing yet
    _finish_shard(store, StageRef("judge", 2))
    refused = accept(store, _run(iterations=1))
    assert refused.refused == ["iterations"] and refused.spec.iterations == 2  # judge-2 has begun
    assert accept(store, _run(iterations=4)).spec.iterations == 4  # more: at any time
