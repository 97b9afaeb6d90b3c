"""The stage contract and the driver that makes every stage resumable and idempotent.

A generation stage is a map over shards (one per Indexed-Job completion index) plus a cheap,
deterministic `finalize` (merge, balance, score). A shard is done when its marker exists; the
stage is done when its manifest exists. Whoever finishes the last shard finalizes; two pods
racing to finalize write the same bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from selftaught.api.spec import ModelSource
from selftaught.store.jsonl import JsonlWriter
from selftaught.store.manifest import Manifest, read_manifest, write_manifest
from selftaught.stages.context import LazyGenerator, StageContext

log = logging.getLogger(__name__)


@dataclass
class ShardResult:
    counts: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. partial scores for finalize


class Stage:
    name: ClassVar[str]
    sharded: ClassVar[bool] = False

    def model(self, ctx: StageContext) -> ModelSource | None:
        """The model a generation stage loads (None for CPU stages)."""
        return None

    def run_shard(self, ctx: StageContext, shard: int, out: JsonlWriter, generator: LazyGenerator) -> ShardResult:
        raise NotImplementedError

    def finalize(self, ctx: StageContext, shard_manifests: list[Manifest]) -> Manifest | None:
        """Merge the shards (or, for a CPU stage, do the work). None: another process publishes."""
        raise NotImplementedError


def sum_counts(manifests: list[Manifest]) -> dict[str, float]:
    total: dict[str, float] = {}
    for manifest in manifests:
        for key, value in manifest.counts.items():
            total[key] = total.get(key, 0) + value
    return total


def execute(stage: Stage, ctx: StageContext, shards: list[int] | None = None) -> Manifest | None:
    """Run what is left of `stage` (all unfinished shards, or just `shards`), then finalize if
    every shard is done. Returns the stage manifest, or None while other shards are pending."""
    ref = ctx.stage
    existing = read_manifest(ctx.store, ref.manifest_key)
    if existing is not None:
        log.info("%s already done", ref.label)
        return existing
    if not stage.sharded:
        return _publish(ctx, stage.finalize(ctx, []))
    generator = LazyGenerator(lambda: _load_generator(stage, ctx))
    for shard in shards if shards is not None else range(ctx.num_shards):
        if ctx.store.exists(ref.shard_manifest_key(shard)):
            continue
        started = time.monotonic()
        with JsonlWriter(ctx.store, ref.shard_key(shard)) as out:
            result = stage.run_shard(ctx, shard, out, generator)
        written = out.written
        write_manifest(
            ctx.store,
            ref.shard_manifest_key(shard),
            Manifest(
                stage=ref.name,
                iteration=ref.iteration,
                shard=shard,
                shards=ctx.num_shards,
                counts=result.counts,
                outputs={written.key: written.as_dict()},
                seconds=time.monotonic() - started,
                summary=result.extra,
            ),
        )
        log.info("%s shard %d/%d done: %s", ref.label, shard + 1, ctx.num_shards, result.counts)
    markers = [read_manifest(ctx.store, ref.shard_manifest_key(s)) for s in range(ctx.num_shards)]
    if any(m is None for m in markers):
        return None
    return _publish(ctx, stage.finalize(ctx, markers))  # type: ignore[arg-type]


def _publish(ctx: StageContext, manifest: Manifest | None) -> Manifest | None:
    if manifest is None:
        return None
    manifest.stage, manifest.iteration, manifest.shards = ctx.stage.name, ctx.stage.iteration, ctx.num_shards
    if not manifest.seconds:
        manifest.seconds = ctx.elapsed()
    write_manifest(ctx.store, ctx.stage.manifest_key, manifest)
    return manifest


def _load_generator(stage: Stage, ctx: StageContext) -> Any:
    from selftaught.engines.generation import VllmGenerator
    from selftaught.engines.models import resolve_model

    model = stage.model(ctx)
    assert model is not None, f"{stage.name} is a generation stage without a model"
    path = resolve_model(model, ctx.spec.storage)
    return VllmGenerator(path, ctx.spec.generation, seed=ctx.spec.seed)
