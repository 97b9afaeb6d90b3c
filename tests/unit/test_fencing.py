"""Two processes of one stage (an orphan and its replacement, an old pod that outlived its Job):
exactly one publishes, the other's outputs are discarded, and nobody deletes what the winner
published. Shown on the stage driver itself, with stages that write in steps we control."""

from __future__ import annotations

import pytest

from selftaught.pipeline.table import StageRef
from selftaught.stages import MapReduceStage, Stage, StageContext, execute
from selftaught.stages.contract import ShardResult
from selftaught.store import LocalStore, open_store
from selftaught.store.jsonl import write_jsonl
from selftaught.store.layout import SELECTED
from selftaught.store.manifest import Manifest, published_key, read_manifest
from tests.stores import read_output

from .test_pipeline_core import _run


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return open_store(f"{request.getfixturevalue('bucket')}/runs", endpoint=request.getfixturevalue("s3_server"))


class Writes(Stage):
    """A select stage whose run writes `value` and then lets the test interleave another attempt."""

    name = "select"

    def __init__(self, value: str, between=None):
        self.value, self.between = value, between

    def run(self, ctx):
        written = write_jsonl(ctx.store, ctx.output_key(SELECTED[1]), [{"by": self.value}])
        if self.between:
            self.between()
        return Manifest(stage="select", outputs={written.key: written.as_dict()})


def _ctx(store, ref=StageRef("select"), shards=1):
    return StageContext(run=_run(), stage=ref, store=store, num_shards=shards)


def test_a_stale_attempt_that_finishes_after_the_winner_is_discarded_and_deletes_nothing_of_it(store):
    winner, stale = _ctx(store), _ctx(store)
    # the stale attempt writes its output, then the winner runs start to finish, then the stale one publishes
    result = execute(Writes("stale", between=lambda: execute(Writes("winner"), winner)), stale)
    assert result.attempt == winner.attempt  # the stale attempt reports the winner's manifest
    assert read_output(store, SELECTED) == [{"by": "winner"}]
    assert not store.list(f"select/{stale.attempt}/")  # the loser removed its own folder
    assert store.list("select/") == ["select/_manifest.json", published_key(store, *SELECTED)]


def test_what_killed_attempts_left_is_removed_when_the_stage_is_published(store):
    killed = _ctx(store)
    store.write_text(killed.output_key("selected.jsonl"), "{}\n")  # killed before it could publish
    store.write_text(killed.output_key("checkpoint/weights.bin"), "half")
    execute(Writes("next"), _ctx(store))
    assert read_output(store, SELECTED) == [{"by": "next"}]
    assert not store.list(f"select/{killed.attempt}/")


class Shards(MapReduceStage):
    """A two-shard stage whose shard 0 lets the test run a second attempt of the same shard."""

    name = "categorize"

    def __init__(self, value: str, between=None):
        self.value, self.between = value, between

    def model(self, ctx):
        return ctx.spec.models.seed

    def map_shard(self, ctx, shard, out, engine):
        out.write({"shard": shard, "by": self.value})
        if shard == 0 and self.between:
            self.between()
        return ShardResult({"records": 1})

    def reduce(self, ctx, shards):
        return Manifest(stage="categorize", outputs={k: v for m in shards for k, v in m.outputs.items()})


def test_two_attempts_of_one_shard_leave_one_file_and_the_reduce_reads_only_the_winners(store):
    ref = StageRef("categorize")
    first, second = _ctx(store, ref, 2), _ctx(store, ref, 2)
    execute(Shards("first", between=lambda: execute(Shards("second"), second, [0])), first, [0])
    marker = read_manifest(store, ref.shard_manifest_key(0))
    assert marker.attempt == second.attempt  # the second attempt finished shard 0 first
    assert not store.list(f"categorize/{first.attempt}/")  # the slower copy was discarded
    manifest = execute(Shards("third"), _ctx(store, ref, 2))  # shard 1, then the reduce
    records = [r for key in manifest.outputs for r in read_output_key(store, key)]
    assert records == [{"shard": 0, "by": "second"}, {"shard": 1, "by": "third"}]
    assert all(store.exists(key) for key in manifest.outputs)  # cleaning stale attempts kept every shard file


def read_output_key(store, key):
    from selftaught.store.jsonl import read_jsonl

    return list(read_jsonl(store, key))
