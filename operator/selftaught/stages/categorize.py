"""categorize: the generator model labels each instruction with category, complexity, length."""

from __future__ import annotations

from collections import Counter

from selftaught.chat import Sampling
from selftaught.method.parsing import parse_categorization
from selftaught.method.prompts import categorize_messages, response_messages
from selftaught.method.selection import priority
from selftaught.stages.budget import Prompt, fitting
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult, sum_counts
from selftaught.stages.sources import (
    MANIFEST_REASONS,
    Counted,
    check_evaluation_source,
    located_instructions,
    merged,
    nothing_usable,
)
from selftaught.store.jsonl import SkipCounter
from selftaught.store.manifest import Manifest


def instruction_prompts(spec, instruction: str) -> list[Prompt]:
    """The prompts an instruction goes into with the generator model: categorize's, and pairs'
    answer prompt (same model, same context). Both are measured here, where the record's file:line
    is known, so an instruction too long for pairs is a bad record now, not a pairs failure later."""
    return [
        (categorize_messages(instruction), spec.categorize.max_tokens, "categorize.maxTokens"),
        (response_messages(instruction), spec.pairs.max_tokens, "pairs.maxTokens"),
    ]


class Categorize(MapReduceStage):
    name = "categorize"

    def model(self, ctx):
        return ctx.spec.generator_model

    def map_shard(self, ctx, shard, out, engine):
        spec, data = ctx.spec, ctx.spec.data
        if shard == 0:  # the first stage: a broken evaluation source fails the run now, not after pairs
            check_evaluation_source(data.evaluation, spec.evaluate.benchmark, spec.storage)
        skipped, too_long = SkipCounter(), SkipCounter()
        usable = Counted(located_instructions(data.instructions, spec.storage, skipped))
        located = list(in_shard(usable, shard, ctx.num_shards))
        if not usable.count:  # every shard read the whole input: none of them has anything to do
            raise nothing_usable(f"data.instructions.source {data.instructions.source}", "instruction to categorize", skipped)
        records = fitting(
            engine, located, lambda record: instruction_prompts(spec, record["instruction"]),
            on_bad_record=data.instructions.on_bad_record, policy_field="data.instructions.onBadRecord", skipped=too_long,
        )  # fmt: skip
        if not records and ctx.num_shards == 1:  # known now: fail before a marker says "done"
            raise nothing_usable(f"data.instructions.source {data.instructions.source}", "instruction to categorize", merged(skipped, too_long))
        settings = spec.categorize
        ctx.progress.start(len(records))
        # a seed per instruction: sampled (temperature > 0), a resumed shard still draws the same
        seeds = [priority(spec.seed, f"categorize:{r['id']}") % 2**31 for r in records]
        answers = engine.chat(
            [categorize_messages(r["instruction"]) for r in records],
            Sampling(n=1, temperature=settings.temperature, max_tokens=settings.max_tokens),
            seeds,
        ) if records else []
        counts: Counter[str] = Counter(records=len(records), tokens=sum(samples[0].tokens for samples in answers))
        for record, samples in zip(records, answers, strict=True):
            parsed = parse_categorization(samples[0].text)
            if parsed is None:
                counts["unparsed"] += 1
                out.write({**record, "category": None, "raw": samples[0].text[:500]})
                continue
            counts[f"category.{parsed.category}"] += 1
            out.write({**record, "category": parsed.category, "complexity": parsed.complexity, "length": parsed.length})
        # every shard reads the same input, so only shard 0 reports what the reader skipped; each
        # shard reports the records of its own that were too long for the model
        read = skipped if shard == 0 else SkipCounter()
        counts["too_long"] = too_long.skipped
        counts["skipped_records"] = read.skipped + too_long.skipped
        return ShardResult(dict(counts), skipped=merged(read, too_long).examples)

    def reduce(self, ctx, shard_manifests):
        counts = sum_counts(shard_manifests)
        reasons = [reason for m in shard_manifests for reason in m.skipped]
        if not counts.get("records"):  # every shard's records were too long for the model
            source = ctx.spec.data.instructions.source
            raise nothing_usable(f"data.instructions.source {source}", "instruction to categorize", SkipCounter(int(counts.get("skipped_records", 0)), reasons[:5]))
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
            skipped=reasons[:MANIFEST_REASONS],
        )
