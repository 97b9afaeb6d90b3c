"""One module per stage; `run_stage` is what `selftaught stage <name>` calls, in a pod or locally."""

from __future__ import annotations

from selftaught.api.spec import SelfTaughtRun
from selftaught.stages.base import Stage, execute
from selftaught.stages.categorize import Categorize
from selftaught.stages.context import StageContext, run_store
from selftaught.stages.evaluate import Evaluate
from selftaught.stages.judge import Judge
from selftaught.stages.pairs import Pairs
from selftaught.stages.select import Select
from selftaught.stages.train import Train
from selftaught.store.layout import StageRef
from selftaught.store.manifest import Manifest

STAGES: dict[str, Stage] = {s.name: s for s in (Categorize(), Select(), Pairs(), Judge(), Train(), Evaluate())}


def run_stage(run: SelfTaughtRun, ref: StageRef, shards: list[int] | None = None) -> Manifest | None:
    stage = STAGES[ref.name]
    if not stage.sharded:
        shards = None  # e.g. a training pod's completion index is its node rank, not a shard
    num_shards = run.spec.generation.shards if stage.sharded else 1
    for shard in shards or []:
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} out of range: {ref.label} has {num_shards} shards")
    ctx = StageContext(run=run, stage=ref, store=run_store(run), num_shards=num_shards)
    return execute(stage, ctx, shards)
