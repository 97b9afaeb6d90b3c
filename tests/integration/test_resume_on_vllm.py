"""A shard killed halfway resumes on vLLM as on the scripted engines of tests/unit/test_shard_resume.py:
the pairs stage samples (temperature 0.7, a seed per instruction), and the resumed shard, asking vLLM
only for what was not saved, writes byte for byte what an uninterrupted one writes."""

from __future__ import annotations

import json

import pytest

from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.stages import IMPLEMENTATIONS, StageContext, execute, shard_resume
from selftaught.stages.context import vllm_engine
from selftaught.stages.shard_resume import SavedRequests
from selftaught.store.layout import SAVED, SELECTED
from selftaught.store.manifest import read_manifest
from tests.conftest import REPO
from tests.stores import publish

pytestmark = pytest.mark.slow


class Dies:
    """The engine, until its call `at`: then the process is gone."""

    def __init__(self, engine, at=None):
        self.engine, self.at, self.calls = engine, at, 0

    def chat(self, conversations, sampling, seeds=None):
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("killed")
        return self.engine.chat(conversations, sampling, seeds)

    @property
    def max_model_len(self):
        return self.engine.max_model_len

    def prompt_tokens(self, conversations):
        return self.engine.prompt_tokens(conversations)


def test_a_pairs_shard_killed_halfway_on_vllm_resumes_to_the_same_bytes(make_run, tmp_path, monkeypatch):
    monkeypatch.setattr(shard_resume, "FLUSH_REQUESTS", 8)  # a part after every call of 8
    monkeypatch.setattr(SavedRequests, "flush_quietly", lambda self: None)  # a SIGKILL writes nothing on its way out
    instructions = [json.loads(line) for line in (REPO / "examples/data/instructions.jsonl").read_text().splitlines() if line.strip()]
    selected = [{"id": f"i{i}", "instruction": r["instruction"], "category": "Coding"} for i, r in enumerate(instructions)]
    ref = StageRef("pairs")
    shards, engines = {}, {}

    def loaded(ctx, model):  # one model load for the three attempts
        if model not in engines:
            engines[model] = vllm_engine(ctx, model)
        return engines[model]

    for name, dies_at in (("whole", None), ("killed", 7), ("resumed", None)):
        run = make_run(storage=str(tmp_path / ("whole" if name == "whole" else "killed")), generation={"batchSize": 8})
        store = open_run_store(run)
        if name != "resumed":
            publish(store, SELECTED, selected)
        ctx = StageContext(run=run, stage=ref, store=store, make_engine=lambda ctx, model, at=dies_at: Dies(loaded(ctx, model), at))
        if dies_at:
            with pytest.raises(RuntimeError, match="killed"):
                execute(IMPLEMENTATIONS["pairs"], ctx)
            assert store.list(f"{ref.prefix}/{SAVED}/00000/")
            continue
        execute(IMPLEMENTATIONS["pairs"], ctx)
        marker = read_manifest(store, ref.shard_manifest_key(0))
        shards[name] = (marker, b"".join(store.read_bytes(key) for key in marker.outputs))
    (whole, whole_bytes), (resumed, resumed_bytes) = shards["whole"], shards["resumed"]
    assert resumed.counts["resumed_samples"] >= 8 and resumed.counts["generated_tokens"] < whole.counts["generated_tokens"]
    assert resumed_bytes == whole_bytes and whole.counts["pairs"] > 0
