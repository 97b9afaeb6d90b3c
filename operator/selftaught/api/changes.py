"""Which edits to a started `SelfTaughtRun` apply.

`DEPENDS` lists every spec field (by its camelCase path, or the path of its whole section) with
the first stage whose output depends on it. Every later stage depends on that stage's output, so
an edit can apply exactly while that stage has produced nothing: it (and all after it) will run
with the new value. Once it has output — a finished stage, a finished shard, or, on a cluster, a
Job running with the old value — the edit is refused, since the data would no longer match the
spec, and the run goes on with the value it started with. Fields with no stage change only how or
when stages run (or which Secret they read), never what they produce: they apply at any time.

So a run whose first stage failed on bad input can be fixed by editing its spec, while a run that
has finished its first stages keeps them consistent. `iterations` may grow at any time and shrink
while no iteration beyond the new value has output. A few edits from one value to another can
contradict no output at all (`HARMLESS`: `onBadRecord` from fail to skip) and apply at any time.
Whether a stage has output is the pipeline's business (`pipeline/runstore.py`); this module only
knows the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selftaught.api.spec import SelfTaughtRunSpec


@dataclass(frozen=True)
class DependsOn:
    #: the first stage whose output the field changes; None: no stage's output
    stage: str | None
    #: only that stage's reduce reads the field: its finished shards are not yet output it changes
    reduce_only: bool = False
    #: instead of a stage: any stage of an iteration after this one (what `iterations` lowered to
    #: this value would disown)
    after_iteration: int | None = None


ANY_TIME = DependsOn(None)
CATEGORIZE, SELECT, PAIRS = DependsOn("categorize"), DependsOn("select"), DependsOn("pairs")
JUDGE, TRAIN, EVALUATE = DependsOn("judge"), DependsOn("train"), DependsOn("evaluate")

#: spec path (or section) -> the first stage whose output depends on it. A path not listed falls
#: under its longest listed prefix; `tests/unit/test_acceptance.py` checks that every field has one.
DEPENDS: dict[str, DependsOn] = {
    # how and when stages run, or with which credentials: never what they produce
    "suspend": ANY_TIME,
    "iterations": ANY_TIME,  # more at any time; fewer while no later iteration has output (`_applies`)
    "scheduling": ANY_TIME,
    "retries": ANY_TIME,
    "estimate": ANY_TIME,  # the cost estimate's assumptions: nothing runs differently
    "serve": ANY_TIME,  # the judge's server after the run: no stage reads it
    "reuse": ANY_TIME,  # where a stage's output comes from, never what it is (a reused one has the same key)
    "tracking": ANY_TIME,  # where the run is logged: no stage output depends on it
    "generation.parallelism": ANY_TIME,
    "generation.batchSize": ANY_TIME,
    "generation.saveEvery": ANY_TIME,  # when a shard saves its answers to resume from, not what it generates
    "generation.gpuMemoryUtilization": ANY_TIME,
    "generation.enforceEager": ANY_TIME,
    "generation.maxNumSeqs": ANY_TIME,  # how vLLM batches, like batchSize: not what it samples
    "generation.maxNumBatchedTokens": ANY_TIME,
    "generation.enableChunkedPrefill": ANY_TIME,
    "models.hfTokenSecret": ANY_TIME,
    "storage.credentialsSecret": ANY_TIME,
    "train.checkpointEvery": ANY_TIME,  # when training saves its state to resume from, not what it trains
    "storage.timeoutSeconds": ANY_TIME,  # how long a store call may wait: never what is in it
    # the first stage, so every stage: where the run's data is, the models, the vLLM settings that
    # change what is generated (or which records fit the context), the seed of every random choice
    "models.seed": CATEGORIZE,  # it generates unless models.generator is set; judge M(0); trained from
    "models.generator": CATEGORIZE,
    "storage.uri": CATEGORIZE,
    "storage.endpoint": CATEGORIZE,
    "storage.sourceEndpoint": CATEGORIZE,
    "storage.region": CATEGORIZE,
    "seed": CATEGORIZE,
    "generation.tensorParallel": CATEGORIZE,
    "generation.shards": CATEGORIZE,  # a stage's shards must all split its input the same way
    "generation.maxModelLen": CATEGORIZE,
    "generation.dtype": CATEGORIZE,
    "generation.enablePrefixCaching": CATEGORIZE,
    "data.instructions": CATEGORIZE,
    "categorize": CATEGORIZE,
    "select": SELECT,
    "data.decontaminate": SELECT,  # select drops the instructions that match the evaluation set
    "pairs": PAIRS,
    # select drops the instructions that match the evaluation source (data.decontaminate); pairs'
    # reduce holds out a fraction of the pairs for evaluation, unless a source is given
    "data.evaluation.source": SELECT,
    "data.evaluation.heldOutFraction": DependsOn("pairs", reduce_only=True),
    "data.evaluation.split": EVALUATE,
    "data.evaluation.onBadRecord": EVALUATE,
    "judge": JUDGE,
    "train.method": JUDGE,  # dpo: the judge stage samples a wrong judgment too, and writes pairs
    "train": TRAIN,
    "evaluate": EVALUATE,
}


#: edits from one value to another that cannot contradict any output: a stage that finished under
#: `onBadRecord: fail` met no bad record, so under `skip` it would have produced the same. The
#: edit a failed stage's message suggests therefore applies even when other shards are done.
HARMLESS: dict[str, frozenset[tuple[Any, Any]]] = {
    "data.instructions.onBadRecord": frozenset({("fail", "skip")}),
    "data.evaluation.onBadRecord": frozenset({("fail", "skip")}),
}


def row_of(path: str) -> str | None:
    """The `DEPENDS` key that covers `path`: the path itself or its longest listed prefix."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in DEPENDS:
            return key
    return None


def depends_on(path: str) -> DependsOn:
    """The first stage whose output `path` changes; a field nobody listed is taken to change
    everything (a new field is refused mid-run until it is listed)."""
    key = row_of(path)
    return DEPENDS[key] if key is not None else CATEGORIZE


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: value}


def _dump(spec: SelfTaughtRunSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True)


def flat_spec(spec: SelfTaughtRunSpec) -> dict[str, Any]:
    """Every field of `spec` by its camelCase dotted path (`train.learningRate`), defaults resolved:
    what acceptance compares, what a stage key hashes (`pipeline/lineage.py`), what `compare` shows."""
    return _flatten(_dump(spec))


def _edits(accepted: SelfTaughtRunSpec, proposed: SelfTaughtRunSpec) -> list[tuple[str, Any, Any]]:
    """(path, old value, new value) of every field that differs, by camelCase path."""
    old, new = _flatten(_dump(accepted)), _flatten(_dump(proposed))
    return [(p, old.get(p), new.get(p)) for p in sorted(old.keys() | new.keys()) if old.get(p) != new.get(p)]


def changed_fields(accepted: SelfTaughtRunSpec, proposed: SelfTaughtRunSpec) -> list[str]:
    """Paths (camelCase, as in the manifest) whose value differs."""
    return [path for path, _, _ in _edits(accepted, proposed)]


#: whether the stage a field depends on has output; by default every stage has (a run that is done)
Produced = Callable[[DependsOn], bool]


def _everything_produced(depends: DependsOn) -> bool:
    return True


def _applies(path: str, old: Any, new: Any, produced: Produced) -> bool:
    if (old, new) in HARMLESS.get(path, ()):
        return True
    if path == "iterations" and isinstance(old, int) and isinstance(new, int) and new < old:
        # fewer iterations than have output: a finished run would say it stopped before what it did
        return not produced(DependsOn(None, after_iteration=new))
    depends = depends_on(path)
    return depends.stage is None or not produced(depends)


def unsafe_changes(accepted: SelfTaughtRunSpec, proposed: SelfTaughtRunSpec, produced: Produced = _everything_produced) -> list[str]:
    """Changed paths whose edit cannot apply: the stage they depend on has output."""
    return [path for path, old, new in _edits(accepted, proposed) if not _applies(path, old, new, produced)]


def merge_safe(accepted: SelfTaughtRunSpec, proposed: SelfTaughtRunSpec, produced: Produced = _everything_produced) -> SelfTaughtRunSpec:
    """The accepted spec with every edit that applies: what the run executes when an edit mixes
    changes that apply and changes that are refused. An edit applies by whole `DEPENDS` row (a
    section such as `data.instructions` moves as one)."""
    data, proposal = _dump(accepted), _dump(proposed)
    for path, old, new in _edits(accepted, proposed):
        if (old, new) in HARMLESS.get(path, ()):
            _set(data, path, new)  # this field alone: the rest of its row may be refused
        elif _applies(path, old, new, produced):
            key = row_of(path) or path.split(".")[0]
            _set(data, key, _get(proposal, key))
    return SelfTaughtRunSpec.model_validate(data)


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        data = data[part]
    data[last] = value
