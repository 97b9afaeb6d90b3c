"""pairs: y_w = the model's answer to x; y_l = its answer to a similar-but-different x'."""

from __future__ import annotations

from collections import Counter

from selftaught.chat import Sampling
from selftaught.errors import EmptyDataset
from selftaught.method.pairs import as_rewardbench, build_pair, is_held_out
from selftaught.method.prompts import modified_instruction_messages, response_messages
from selftaught.method.selection import priority
from selftaught.stages.budget import fits
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult, sum_counts
from selftaught.stages.sources import check_evaluation_source
from selftaught.store.jsonl import JsonlWriter, read_jsonl
from selftaught.store.layout import PAIRS_HELDOUT, PAIRS_TRAIN, SELECTED
from selftaught.store.manifest import Manifest, published_key


def no_held_out_pair(fraction: float, pairs: int) -> str:
    """Why a run that evaluates on held-out pairs cannot: known at pairs' reduce, said there, never
    an accuracy over 0 examples later."""
    return (
        f"data.evaluation.heldOutFraction {fraction} of {pairs} pair{'' if pairs == 1 else 's'} left no held-out pair "
        "to evaluate on; add instructions or give data.evaluation.source (or set heldOutFraction to 0 to train "
        "without evaluating)"
    )


class Pairs(MapReduceStage):
    name = "pairs"

    def model(self, ctx):
        return ctx.spec.generator_model

    def map_shard(self, ctx, shard, out, engine):
        records = list(in_shard(read_jsonl(ctx.store, published_key(ctx.store, *SELECTED)), shard, ctx.num_shards))
        counts: Counter[str] = Counter(records=len(records))
        if not records:
            return ShardResult(dict(counts))
        settings = ctx.spec.pairs
        ctx.progress.start(2 * len(records))  # an answer, then a modified instruction and its answer
        sampling = Sampling(n=1, temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens)
        seed = ctx.spec.seed

        def seeds(step: str, batch: list) -> list[int]:  # sampled, yet a resumed shard draws the same
            return [priority(seed, f"pairs:{step}:{r['id']}") % 2**31 for r in batch]

        baselines = engine.chat([response_messages(r["instruction"]) for r in records], sampling, seeds("baseline", records))
        # an answer cut off at maxTokens is never used: neither as y_w nor to prompt for y_l
        finished = [(r, b[0]) for r, b in zip(records, baselines, strict=True) if not b[0].truncated]
        counts["truncated"] += len(records) - len(finished)
        # y_l's prompt holds x and y_w: one too long for the model's context is dropped and counted
        room = fits(engine, [modified_instruction_messages(r["instruction"], b.text) for r, b in finished], settings.max_tokens)
        counts["too_long"] += room.count(False)
        finished = [item for item, fit in zip(finished, room, strict=True) if fit]
        ctx.progress.advance(len(records) - len(finished))  # their second request is never sent
        modified = engine.chat(
            [modified_instruction_messages(r["instruction"], b.text) for r, b in finished],
            sampling,
            seeds("modified", [r for r, _ in finished]),
        ) if finished else []
        counts["tokens"] = sum(s[0].tokens for s in baselines) + sum(s[0].tokens for s in modified)
        for (record, baseline), answer in zip(finished, modified, strict=True):
            if answer[0].truncated:
                counts["truncated"] += 1
                continue
            pair = build_pair(record, baseline.text, answer[0].text)
            if pair is None:
                counts["unparsed"] += 1
                continue
            counts["pairs"] += 1
            out.write(pair)
        return ShardResult(dict(counts))

    def reduce(self, ctx, shard_manifests):
        evaluation = ctx.spec.data.evaluation
        # an evaluation source given by an edit after categorize is checked before any judge runs
        check_evaluation_source(evaluation, ctx.spec.evaluate.benchmark, ctx.spec.storage)
        fraction = 0.0 if evaluation.source else evaluation.held_out_fraction
        with JsonlWriter(ctx.store, ctx.output_key(PAIRS_TRAIN[1])) as train, JsonlWriter(ctx.store, ctx.output_key(PAIRS_HELDOUT[1])) as heldout:
            for manifest in shard_manifests:
                for key in manifest.outputs:
                    for pair in read_jsonl(ctx.store, key):
                        if is_held_out(pair["id"], ctx.spec.seed, fraction):
                            heldout.write(as_rewardbench(pair))
                        else:
                            train.write(pair)
        counts = sum_counts(shard_manifests)
        counts.update(train=train.written.records, heldout=heldout.written.records)
        if train.written.records == 0:
            raise EmptyDataset(
                f"no usable response pair: {int(counts.get('records', 0))} instructions, "
                f"{int(counts.get('unparsed', 0))} answers without the modified-instruction markers, "
                f"{int(counts.get('truncated', 0))} cut off at pairs.maxTokens"
                + (f", {int(counts['too_long'])} too long for the model's context" if counts.get("too_long") else "")
                + (f", {heldout.written.records} held out" if heldout.written.records else "")
            )
        if fraction and not heldout.written.records:  # evaluation would score nothing: say so now
            raise EmptyDataset(no_held_out_pair(fraction, train.written.records))
        return Manifest(
            stage=self.name,
            counts=counts,
            outputs={train.written.key: train.written.as_dict(), heldout.written.key: heldout.written.as_dict()},
            seconds=sum(m.seconds for m in shard_manifests),
            summary={
                "pairs": train.written.records,
                "heldOut": heldout.written.records,
                "unparsed": int(counts.get("unparsed", 0)),
                "truncated": int(counts.get("truncated", 0)),
                **({"tooLong": int(counts["too_long"])} if counts.get("too_long") else {}),
            },
        )
