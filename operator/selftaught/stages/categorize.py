"""categorize: the generator model labels each instruction with category, complexity, length."""

from __future__ import annotations

from collections import Counter

from selftaught.chat import Sampling
from selftaught.method.parsing import parse_categorization
from selftaught.method.prompts import categorize_messages
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult, sum_counts
from selftaught.stages.sources import iter_instructions
from selftaught.store.jsonl import SkipCounter
from selftaught.store.manifest import Manifest


class Categorize(MapReduceStage):
    name = "categorize"

    def model(self, ctx):
        return ctx.spec.generator_model

    def map_shard(self, ctx, shard, out, engine):
        skipped = SkipCounter()
        source = iter_instructions(ctx.spec.data.instructions, ctx.spec.storage, skipped)
        records = list(in_shard(source, shard, ctx.num_shards))
        settings = ctx.spec.categorize
        answers = engine.chat(
            [categorize_messages(r["instruction"]) for r in records],
            Sampling(n=1, temperature=settings.temperature, max_tokens=settings.max_tokens),
        ) if records else []
        counts: Counter[str] = Counter(records=len(records))
        for record, samples in zip(records, answers, strict=True):
            parsed = parse_categorization(samples[0].text)
            if parsed is None:
                counts["unparsed"] += 1
                out.write({**record, "category": None, "raw": samples[0].text[:500]})
                continue
            counts[f"category.{parsed.category}"] += 1
            out.write({**record, "category": parsed.category, "complexity": parsed.complexity, "length": parsed.length})
        # every shard reads the same input, so only shard 0 reports what the reader skipped
        if shard == 0:
            counts["skipped_records"] = skipped.skipped
        return ShardResult(dict(counts), skipped=skipped.examples if shard == 0 else [])

    def reduce(self, ctx, shard_manifests):
        counts = sum_counts(shard_manifests)
        parsed = counts.get("records", 0) - counts.get("unparsed", 0)
        return Manifest(
            stage=self.name,
            counts=counts,
            outputs={k: v for m in shard_manifests for k, v in m.outputs.items()},
            seconds=sum(m.seconds for m in shard_manifests),
            summary={
                "instructions": int(counts.get("records", 0)),
                "categorized": int(parsed),
                "unparsed": int(counts.get("unparsed", 0)),
                **({"skipped": int(counts["skipped_records"])} if counts.get("skipped_records") else {}),
            },
            skipped=[reason for m in shard_manifests for reason in m.skipped],
        )
