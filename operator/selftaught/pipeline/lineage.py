"""Stage keys: the hash of everything a stage's output depends on, so two runs whose stage would
write the same output can share it (`pipeline/reuse.py`).

A stage's key hashes, and only hashes:
- the spec fields it reads: the rows of `DEPENDS` (`api/changes.py`, the table that already says
  which stage a field first changes) that name this stage, and the few fields a stage reads
  besides (`ALSO_READS`); never the fields that say where or how a stage runs (`ANY_TIME`), nor
  where the store is (`storage`), nor the model *names* (`models`), which count by identity;
- the identity of the data it reads (`Identities`: a file's content hash, an object's ETag and
  size) and of the model it loads (a local checkpoint's files, a run's checkpoint by the digests
  its manifest recorded);
- the keys of the stages it reads (`stage_graph`'s `needs`), so a change reaches every stage
  after it and no other;
- the stage's code version (`StageInfo.version` in the stage table).

Pure: the identities are measured by `pipeline/identity.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from selftaught.api.changes import DEPENDS, flat_spec, row_of
from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.pipeline.planner import stage_graph
from selftaught.pipeline.table import StageRef

#: spec sections that never enter a key: where the outputs are stored, and the models by name (their
#: identity does), and reuse itself
NOT_HASHED = ("storage", "models", "reuse")

#: what a stage reads beyond its `DEPENDS` rows (those name only the first stage a field changes):
#: categorize drops records whose pairs prompt would not fit (`pairs.maxTokens`); a GRPO train
#: stage samples its own judgments (`judge`); evaluate prompts in the judge's format
ALSO_READS: dict[str, tuple[str, ...]] = {
    "categorize": ("pairs.maxTokens",),
    "train": ("judge", "train.method"),
    "evaluate": ("judge.format",),
}

#: which identities each stage reads: the data (`instructions`, `evaluation`) and the model it loads
#: (`generator`, `seed`); a checkpoint of the run counts through the key of the train stage that wrote it
READS_IDENTITIES: dict[str, tuple[str, ...]] = {
    "categorize": ("instructions", "generator"),
    "select": ("evaluation",),
    "pairs": ("generator",),
    "judge": ("seed",),
    "train": ("seed",),
    "evaluate": ("evaluation", "seed"),
}


@dataclass(frozen=True)
class Identities:
    """What the run's data and models are, by content (`pipeline/identity.py`)."""

    instructions: str
    evaluation: str
    seed: str
    generator: str


def _covers(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(f"{prefix}.")


def fields_read(spec: SelfTaughtRunSpec, name: str) -> dict[str, Any]:
    """The spec fields (camelCase path -> value, defaults resolved) the stage `name` reads."""
    flat = flat_spec(spec)
    read = {}
    for path, value in flat.items():
        if any(_covers(path, section) for section in NOT_HASHED):
            continue
        row = row_of(path)
        first = DEPENDS[row].stage if row is not None else "categorize"  # an unlisted field: every stage
        if first == name or any(_covers(path, extra) for extra in ALSO_READS.get(name, ())):
            read[path] = value
    return read


def _digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stage_keys(spec: SelfTaughtRunSpec, identities: Identities) -> dict[StageRef, str]:
    """The key of every stage of the run, in execution order."""
    keys: dict[StageRef, str] = {}
    for node in stage_graph(spec):  # in execution order: a stage's needs come first
        ref = node.ref
        keys[ref] = _digest(
            {
                "stage": ref.label,
                "version": ref.info.version,
                "fields": fields_read(spec, ref.name),
                "identities": {what: getattr(identities, what) for what in READS_IDENTITIES[ref.name]},
                "needs": {need.label: keys[need] for need in node.needs},
            }
        )
    return keys
