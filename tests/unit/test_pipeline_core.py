"""The pipeline core: one stage table that both executors and the stage implementations agree
with, stage references, the stage command and document, and the stage contract run against a
scripted engine (no vLLM)."""

import json

import pytest

from selftaught.api.load import parse_run
from selftaught.chat import Sample
from selftaught.errors import InvalidSpec
from selftaught.method.intervals import wilson
from selftaught.pipeline.launch import read_stage_document, stage_command, stage_document
from selftaught.pipeline.table import STAGES, StageRef
from selftaught.stages import IMPLEMENTATIONS, MapReduceStage, Stage, StageContext, execute
from selftaught.store import LocalStore
from selftaught.store.layout import PAIRS_HELDOUT, metrics_output
from selftaught.store.manifest import published_key, read_manifest
from tests.stores import publish, shard_records

from .test_spec import MINIMAL


def _run(**spec):
    return parse_run({**MINIMAL, "metadata": {"name": "r", "namespace": "ml"}, "spec": {**MINIMAL["spec"], **spec}})


def test_every_stage_in_the_table_has_an_implementation_of_the_shape_the_table_says():
    assert [info.name for info in STAGES] == list(IMPLEMENTATIONS)
    for info in STAGES:
        implementation = IMPLEMENTATIONS[info.name]
        assert isinstance(implementation, MapReduceStage if info.sharded else Stage), info.name
        assert (info.engine == "vllm") == info.sharded  # generation stages are the sharded ones


def test_the_spec_offers_scheduling_overrides_for_exactly_the_stages_of_the_table():
    from selftaught.api.spec import Scheduling, StageOverrides

    assert list(StageOverrides.model_fields) == [info.name for info in STAGES]
    assert {info.kind for info in STAGES} <= set(Scheduling.model_fields)


def test_stage_references_name_their_folder_and_refuse_what_does_not_exist():
    assert StageRef("judge", 2).label == "judge-2" and StageRef("judge", 2).prefix == "iter-002/judge"
    assert StageRef("select").label == "select" and StageRef("select").manifest_key == "select/_manifest.json"
    assert StageRef.parse("evaluate-0") == StageRef("evaluate", 0)
    assert StageRef.from_prefix("iter-003/train") == StageRef("train", 3)
    assert StageRef.from_prefix("iter-001/select") is None and StageRef.from_prefix("report") is None
    for bad in (("judge", 0), ("select", 1), ("bogus", 0)):
        with pytest.raises(ValueError):
            StageRef(*bad)


def test_every_stage_runs_the_same_command_and_training_runs_it_under_torchrun():
    run = _run(train={"gpusPerNode": 8, "nodes": 2})
    assert stage_command(run.spec, StageRef("pairs"), python="python") == ["python", "-m", "selftaught", "stage", "pairs", "--iteration=0"]
    train = stage_command(run.spec, StageRef("train", 2), python="python", node_rank="${JOB_COMPLETION_INDEX}")
    assert train[:3] == ["python", "-m", "torch.distributed.run"] and "--nnodes=2" in train and "--nproc-per-node=8" in train
    assert train[-5:] == ["-m", "selftaught", "stage", "train", "--iteration=2"] and "--node-rank=${JOB_COMPLETION_INDEX}" in train


def test_the_stage_document_round_trips_and_a_missing_one_is_an_invalid_spec():
    run = _run()
    document = stage_document(run)
    assert json.loads(document)["metadata"] == {"name": "r", "namespace": "ml"}
    assert read_stage_document({"SELFTAUGHT_RUN": document}) == run
    with pytest.raises(InvalidSpec, match="SELFTAUGHT_RUN"):
        read_stage_document({})
    with pytest.raises(InvalidSpec, match="not JSON"):
        read_stage_document({"SELFTAUGHT_RUN": "{"})


class WordsAsTokens:
    """The measuring half of a ChatEngine: a token per word, a context no test prompt fills."""

    max_model_len = 4096

    def prompt_tokens(self, conversations):
        return [sum(len(m["content"].split()) for m in c) for c in conversations]


class ScriptedEngine(WordsAsTokens):
    """A ChatEngine that answers every judge prompt with a fixed verdict and counts its calls."""

    def __init__(self, text):
        self.text, self.calls = text, 0

    def chat(self, conversations, sampling, seeds=None):
        self.calls += 1
        return [[Sample(self.text, 4)] * sampling.n for _ in conversations]


def test_a_map_reduce_stage_runs_on_any_chat_engine_and_a_reduce_only_pass_loads_none(tmp_path):
    run = _run(generation={"shards": 2}, evaluate={"positionConsistency": False})
    store = LocalStore(tmp_path)
    pairs = [{"id": f"p{i}", "prompt": f"q{i}", "chosen": "good", "rejected": "bad", "subset": "default"} for i in range(6)]
    publish(store, PAIRS_HELDOUT, pairs)
    engine = ScriptedEngine("The first is better. [[A]]")
    ref = StageRef("evaluate", 0)
    ctx = StageContext(run=run, stage=ref, store=store, num_shards=2, make_engine=lambda ctx, model: engine)
    assert execute(IMPLEMENTATIONS["evaluate"], ctx, [0]) is None  # shard 1 pending
    assert read_manifest(store, ref.shard_manifest_key(0)).summary == {}
    manifest = execute(IMPLEMENTATIONS["evaluate"], ctx)
    written = [r for s in range(2) for r in shard_records(store, ref.shard_manifest_key(s))]
    assert all(r["output"] == "The first is better. [[A]]" and r["winner"] in "AB" for r in written)  # what `selftaught score` reads
    expected = sum(r["winner"] == "A" for r in written) / len(written)  # the judge always says A
    assert manifest.summary["accuracy"] == round(expected, 4) and manifest.summary["examples"] == 6
    # own data: no RewardBench overall, nor ever the name; its accuracy is its custom score, said once
    assert manifest.summary["evaluated"] == "held-out pairs" and "overall" not in manifest.summary and "custom" not in manifest.summary
    calls = engine.calls
    assert execute(IMPLEMENTATIONS["evaluate"], ctx) == manifest and engine.calls == calls  # done: a no-op


def test_select_is_a_plain_stage_that_fails_clearly_without_its_input(tmp_path):
    run = _run()
    ctx = StageContext(run=run, stage=StageRef("select"), store=LocalStore(tmp_path))
    with pytest.raises(Exception, match="categorize") as raised:
        execute(IMPLEMENTATIONS["select"], ctx)
    assert raised.value.reason == "ObjectNotFound" and not LocalStore(tmp_path).list("select/")


class KnowingEngine(WordsAsTokens):
    """A judge that knows: it names the answer that contains RIGHT (in either position)."""

    def chat(self, conversations, sampling, seeds=None):
        answers = []
        for messages in conversations:
            text = messages[-1]["content"]
            a_block = text.split("[The Start of Assistant A's Answer]")[1].split("[The End of Assistant A's Answer]")[0]
            answers.append([Sample(f"Reasoning. [[{'A' if 'RIGHT' in a_block else 'B'}]]", 5)] * sampling.n)
        return answers


def test_judgebench_pairs_are_judged_in_both_orders_and_scored_on_the_net_vote(tmp_path):
    rows = [
        {"pair_id": f"p{i}", "question": f"q{i}", "response_A": "RIGHT" if label == "A>B" else "wrong",
         "response_B": "wrong" if label == "A>B" else "RIGHT", "label": label, "source": source}
        for i, (label, source) in enumerate([("A>B", "mmlu-pro-law"), ("B>A", "livebench-math"), ("B>A", "livecodebench"), ("A>B", "livebench-reasoning")])
    ]  # fmt: skip
    source = tmp_path / "judgebench.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = _run(data={"instructions": {"source": "x"}, "evaluation": {"source": str(source)}}, evaluate={"benchmark": "judgebench"})
    store = LocalStore(tmp_path / "store")
    ctx = StageContext(run=run, stage=StageRef("evaluate", 0), store=store, make_engine=lambda ctx, model: KnowingEngine())
    manifest = execute(IMPLEMENTATIONS["evaluate"], ctx)
    written = shard_records(store, StageRef("evaluate", 0).shard_manifest_key(0))
    assert all({"output", "swapped_output", "winner"} <= set(r) for r in written)
    assert manifest.summary["overall"] == 1.0 and manifest.summary["evaluated"] == "JudgeBench"
    assert manifest.summary["overallInterval"] == [round(wilson(4, 4).low, 4), 1.0]  # a proportion of pairs: Wilson's
    report = json.loads(store.read_text(published_key(store, *metrics_output(0))))
    assert report["sections"] == {"Knowledge": 1.0, "Reasoning": 1.0, "Math": 1.0, "Coding": 1.0}


def test_a_snapshot_this_version_cannot_read_is_a_clear_error_not_a_crash(tmp_path):
    from selftaught.pipeline.runstore import SnapshotUnreadable, accept
    from selftaught.store.layout import RUN_SNAPSHOT

    run = _run()
    store = LocalStore(tmp_path)
    accept(store, run)
    snapshot = json.loads(store.read_text(RUN_SNAPSHOT))
    snapshot["spec"]["judge"]["fromTheFuture"] = True  # written by a newer selftaught
    store.write_text(RUN_SNAPSHOT, json.dumps(snapshot))
    with pytest.raises(SnapshotUnreadable, match="cannot read the spec the run started with .*fromTheFuture"):
        accept(store, run)
