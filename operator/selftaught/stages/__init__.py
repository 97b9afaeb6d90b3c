"""One module per stage: reads its inputs from the store, asks an engine, writes its outputs and
a manifest. `IMPLEMENTATIONS` maps the pipeline's stage names to them; which stage runs when,
where and how is the pipeline core's (`pipeline/table.py`), not theirs."""

from __future__ import annotations

from selftaught.stages.categorize import Categorize
from selftaught.stages.context import StageContext
from selftaught.stages.contract import AnyStage, MapReduceStage, Stage, execute
from selftaught.stages.evaluate import Evaluate
from selftaught.stages.judge import Judge
from selftaught.stages.pairs import Pairs
from selftaught.stages.select import Select
from selftaught.stages.train import Train

IMPLEMENTATIONS: dict[str, AnyStage] = {s.name: s for s in (Categorize(), Select(), Pairs(), Judge(), Train(), Evaluate())}

__all__ = ["IMPLEMENTATIONS", "MapReduceStage", "Stage", "StageContext", "execute"]
