"""Where each stage's outputs and done-markers live inside a run's store.

```
run.json                                   spec snapshot
categorize/shard-00000.jsonl               one file per shard
categorize/_shards/00000.json              shard done-marker (counts, sha256, seconds)
categorize/_manifest.json                  stage done-marker
select/selected.jsonl
pairs/train.jsonl  pairs/heldout.jsonl
iter-001/judge/sft.jsonl                   the kept, balanced judgments
iter-001/train/checkpoint/                 HF checkpoint (safetensors, tokenizer, chat template)
iter-001/evaluate/metrics.json             iter-000/evaluate is the seed judge's baseline
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StageName = Literal["categorize", "select", "pairs", "judge", "train", "evaluate"]
GENERATION_STAGES: frozenset[str] = frozenset({"categorize", "pairs", "judge", "evaluate"})
ITERATION_STAGES: frozenset[str] = frozenset({"judge", "train", "evaluate"})


@dataclass(frozen=True, order=True)
class StageRef:
    """One stage of one iteration (iteration 0 for the pre-iteration stages and the baseline)."""

    name: StageName
    iteration: int = 0

    def __post_init__(self) -> None:
        if self.name in ITERATION_STAGES and self.iteration < (0 if self.name == "evaluate" else 1):
            raise ValueError(f"{self.name} needs an iteration >= 1, got {self.iteration}")
        if self.name not in ITERATION_STAGES and self.iteration != 0:
            raise ValueError(f"{self.name} has no iteration")

    @property
    def prefix(self) -> str:
        if self.name in ITERATION_STAGES:
            return f"iter-{self.iteration:03d}/{self.name}"
        return self.name

    @property
    def label(self) -> str:
        """Human and Kubernetes friendly: `judge-1`, `categorize`."""
        return f"{self.name}-{self.iteration}" if self.name in ITERATION_STAGES else self.name

    @property
    def sharded(self) -> bool:
        return self.name in GENERATION_STAGES

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/_manifest.json"

    def shard_key(self, shard: int) -> str:
        return f"{self.prefix}/shard-{shard:05d}.jsonl"

    def shard_manifest_key(self, shard: int) -> str:
        return f"{self.prefix}/_shards/{shard:05d}.json"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @classmethod
    def parse(cls, label: str) -> StageRef:
        name, _, iteration = label.partition("-")
        return cls(name, int(iteration) if iteration else 0)  # type: ignore[arg-type]


RUN_SNAPSHOT = "run.json"
SELECTED = "select/selected.jsonl"
PAIRS_TRAIN = "pairs/train.jsonl"
PAIRS_HELDOUT = "pairs/heldout.jsonl"


def sft_key(iteration: int) -> str:
    return StageRef("judge", iteration).key("sft.jsonl")


def checkpoint_prefix(iteration: int) -> str:
    return StageRef("train", iteration).key("checkpoint")


def metrics_key(iteration: int) -> str:
    return StageRef("evaluate", iteration).key("metrics.json")
