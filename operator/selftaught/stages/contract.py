"""The stage contract, in two honest shapes, and the driver that makes every stage resumable and
idempotent.

- `MapReduceStage` (the generation stages): `map_shard` over shards (one per Indexed-Job
  completion index), each loading its model once, then a cheap, deterministic `reduce` (merge,
  balance, score). A shard is done when its marker exists; whoever finishes the last shard
  reduces; of two pods racing to reduce (or to finish one shard), the first to publish wins.
- `Stage` (the CPU and training stages): one `run`.

A shard that dies before its marker resumes by request: what its engine answered is saved as it
goes and the next attempt replays it (`stages/shard_resume.py`), so its output is the same.

Either way the stage is done exactly when its manifest exists.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar

from selftaught.api.spec import ModelSource, duration_seconds
from selftaught.chat import ChatEngine
from selftaught.stages.context import LazyEngine, StageContext
from selftaught.stages.shard_progress import NoProgress, ShardProgress
from selftaught.stages.shard_resume import RESUMED, ResumingEngine, SavedRequests, fingerprint
from selftaught.store import Store
from selftaught.store.jsonl import JsonlWriter
from selftaught.store.layout import SHARD_MARKERS, attempt_of, is_saved, manifest_key, progress_key, shard_name
from selftaught.store.manifest import Manifest, create_manifest, read_manifest

log = logging.getLogger(__name__)
#: what every generation shard counts beside the stage's own counts
GENERATED_TOKENS, GENERATION_SECONDS = "generated_tokens", "generation_seconds"
#: the summary key of a stage's speed (generated tokens/s per GPU; trained tokens/s per GPU)
TOKENS_PER_SECOND = "tokensPerSecondPerGpu"


@dataclass
class ShardResult:
    counts: dict[str, float] = field(default_factory=dict)
    #: the first reasons the input reader skipped a bad record (under `onBadRecord: skip`)
    skipped: list[str] = field(default_factory=list)


class Stage:
    """A stage that does its work in one process (or one process group, for training)."""

    name: ClassVar[str]

    def run(self, ctx: StageContext) -> Manifest | None:
        """Do the work; None when another process of the group publishes the manifest."""
        raise NotImplementedError


class MapReduceStage:
    """A generation stage: a model, a map over shards, a reduce."""

    name: ClassVar[str]

    def model(self, ctx: StageContext) -> ModelSource:
        """The model this stage generates with."""
        raise NotImplementedError

    def map_shard(self, ctx: StageContext, shard: int, out: JsonlWriter, engine: ChatEngine) -> ShardResult:
        raise NotImplementedError

    def reduce(self, ctx: StageContext, shards: list[Manifest]) -> Manifest:
        raise NotImplementedError


AnyStage = Stage | MapReduceStage


def sum_counts(manifests: list[Manifest]) -> dict[str, float]:
    total: dict[str, float] = {}
    for manifest in manifests:
        for key, value in manifest.counts.items():
            total[key] = total.get(key, 0) + value
    return total


def execute(stage: AnyStage, ctx: StageContext, shards: list[int] | None = None) -> Manifest | None:
    """Run what is left of `stage` (all unfinished shards, or just `shards`), then reduce if every
    shard is done. Returns the stage manifest, or None while other shards (or ranks) are pending."""
    ref = ctx.stage
    existing = read_manifest(ctx.store, ref.manifest_key)
    if existing is not None:
        log.info("%s already done", ref.label)
        return existing
    if isinstance(stage, Stage):
        return _publish(ctx, stage.run(ctx))
    # the model loads on first use, outside the counted calls: their seconds are generation only
    engine = LazyEngine(lambda: ctx.meter.counted(_loaded(ctx, ctx.engine_factory(stage.model(ctx)))))
    for shard in shards if shards is not None else range(ctx.num_shards):
        if ctx.store.exists(ref.shard_manifest_key(shard)):
            continue
        started = time.monotonic()
        ctx.meter.reset()
        ctx.progress = ShardProgress(ctx.store, progress_key(ref.prefix, shard), ref.label, shard, ctx.attempt)
        ctx.progress.start()  # map_shard says its total once it has read its input
        # what earlier attempts of the shard generated is replayed, what this one generates saved
        every = duration_seconds(ctx.spec.generation.save_every)  # 0: only when the shard stops
        saved = SavedRequests(ctx.store, ref.prefix, shard, ctx.attempt, ctx.progress, every_requests=None if every else sys.maxsize,
                              every_seconds=every or math.inf)  # fmt: skip
        saved.load()
        resuming = ResumingEngine(engine, saved, lambda: fingerprint(stage.model(ctx), ctx.spec.generation), ctx.spec.generation.batch_size)
        try:
            with JsonlWriter(ctx.store, ctx.output_key(shard_name(shard))) as out:
                result = stage.map_shard(ctx, shard, out, resuming)
            ctx.progress.finish()
        except BaseException:
            saved.flush_quietly()  # a shard stopped (SIGTERM, a crash): the next attempt replays what it finished
            raise
        finally:
            ctx.progress = NoProgress()
        written = out.written
        marker = Manifest(
            stage=ref.name,
            iteration=ref.iteration,
            shard=shard,
            shards=ctx.num_shards,
            attempt=ctx.attempt,
            counts={**result.counts, **saved.counts(), GENERATED_TOKENS: ctx.meter.tokens, GENERATION_SECONDS: round(ctx.meter.seconds, 3)},
            outputs={written.key: written.as_dict()},
            seconds=time.monotonic() - started,
            skipped=result.skipped,
        )
        won = create_manifest(ctx.store, ref.shard_manifest_key(shard), marker)
        saved.discard()  # the shard is done, by this attempt or another
        if not won:
            ctx.store.delete(written.key)  # another attempt finished this shard first: its file counts
            log.warning("%s shard %d was finished by another attempt; this attempt's copy is discarded", ref.label, shard)
            continue
        log.info("%s shard %d/%d done: %s", ref.label, shard + 1, ctx.num_shards, result.counts)
    markers = [read_manifest(ctx.store, ref.shard_manifest_key(s)) for s in range(ctx.num_shards)]
    finished = [m for m in markers if m is not None]
    if len(finished) < ctx.num_shards:
        return None
    return _publish(ctx, with_generation_speed(stage.reduce(ctx, finished), finished, ctx.spec.generation.tensor_parallel))


def with_generation_speed(manifest: Manifest, shards: list[Manifest], gpus_per_engine: int) -> Manifest:
    """Every generation stage's manifest says how fast it generated: tokens per second per GPU
    while its engines were generating (model loading left out), over all its shards. Shards
    that ran at the same time each count their own seconds: the rate is per GPU, not per run.
    It also says what shards resumed from saved answers instead of generating them again."""
    tokens = sum(m.counts.get(GENERATED_TOKENS, 0) for m in shards)
    seconds = sum(m.counts.get(GENERATION_SECONDS, 0) for m in shards)
    manifest.counts.setdefault(GENERATED_TOKENS, tokens)
    manifest.counts.setdefault(GENERATION_SECONDS, round(seconds, 3))
    for key in RESUMED:
        if resumed := sum(m.counts.get(key, 0) for m in shards):
            manifest.counts.setdefault(key, resumed)
    if tokens and seconds > 0:
        manifest.summary[TOKENS_PER_SECOND] = round(tokens / seconds / gpus_per_engine, 1)
    return manifest


def _loaded(ctx: StageContext, engine: ChatEngine) -> ChatEngine:
    ctx.progress.working()  # the shard's rate of work counts from here, not from the model load
    return engine


def _publish(ctx: StageContext, manifest: Manifest | None) -> Manifest | None:
    """Publish this attempt's outputs by creating the stage's marker, unless another attempt
    already did: then this attempt's folder is removed and the winner's manifest stands."""
    if manifest is None:
        return None
    ref = ctx.stage
    manifest.stage, manifest.iteration, manifest.shards = ref.name, ref.iteration, ctx.num_shards
    manifest.attempt = ctx.attempt
    if not manifest.seconds:
        manifest.seconds = ctx.elapsed()
    if create_manifest(ctx.store, ref.manifest_key, manifest):
        discard_stale_attempts(ctx.store, ref.prefix)
        return manifest
    log.warning("%s was published by another attempt; this attempt's outputs are discarded", ref.label)
    ctx.store.delete_prefix(f"{ref.prefix}/{ctx.attempt}/")
    return read_manifest(ctx.store, ref.manifest_key)


def discard_stale_attempts(store: Store, prefix: str) -> list[str]:
    """Remove what attempts that did not win left in the stage's folder (killed, or slower than
    the winner), and the answers any shard saved to resume from (`_saved/`, which a finished shard
    removes itself unless killed first); keeps every file the stage manifest or a shard marker
    names. The deleted keys."""
    keep: set[str] = set()
    for key in store.list(f"{prefix}/"):
        if key.endswith(".json") and (key == manifest_key(prefix) or key.startswith(f"{prefix}/{SHARD_MARKERS}/")):
            marker = read_manifest(store, key)
            if marker is not None:
                keep.update(marker.outputs)
    stale = [key for key in store.list(f"{prefix}/") if (attempt_of(prefix, key) or is_saved(prefix, key)) and key not in keep]
    for key in stale:
        store.delete(key)
    return stale

