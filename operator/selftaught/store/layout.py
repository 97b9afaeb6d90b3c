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
Keys are built from a stage's name and, for the stages of an iteration, its number; which stages
have iterations is the pipeline's stage table's business, not the store's.
"""

from __future__ import annotations

MANIFEST = "_manifest.json"
SHARD_MARKERS = "_shards"


def stage_prefix(name: str, iteration: int | None = None) -> str:
    """`categorize`, or `iter-001/judge` for a stage of an iteration."""
    return name if iteration is None else f"iter-{iteration:03d}/{name}"


def parse_stage_prefix(prefix: str) -> tuple[str, int | None] | None:
    """The inverse of `stage_prefix`, or None for a key that is not a stage folder."""
    parts = prefix.split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 2 and parts[0].startswith("iter-") and parts[0][5:].isdigit():
        return parts[1], int(parts[0][5:])
    return None


def manifest_key(prefix: str) -> str:
    return f"{prefix}/{MANIFEST}"


def shard_key(prefix: str, shard: int) -> str:
    return f"{prefix}/shard-{shard:05d}.jsonl"


def shard_marker_key(prefix: str, shard: int) -> str:
    return f"{prefix}/{SHARD_MARKERS}/{shard:05d}.json"


RUN_SNAPSHOT = "run.json"
CATEGORIZED = manifest_key(stage_prefix("categorize"))
SELECTED = "select/selected.jsonl"
PAIRS_TRAIN = "pairs/train.jsonl"
PAIRS_HELDOUT = "pairs/heldout.jsonl"


def sft_key(iteration: int) -> str:
    return f"{stage_prefix('judge', iteration)}/sft.jsonl"


def checkpoint_prefix(iteration: int) -> str:
    return f"{stage_prefix('train', iteration)}/checkpoint"


def metrics_key(iteration: int) -> str:
    return f"{stage_prefix('evaluate', iteration)}/metrics.json"
