"""judge (iteration i): judge M(i-1) annotates the training pairs by adaptive rejection sampling;
one correct judgment is kept per item, then A/B winners are balanced into SFT records."""

from __future__ import annotations

import random
from collections import Counter

from selftaught.api.spec import ModelSource
from selftaught.chat import Sampling
from selftaught.errors import NoTrainingData
from selftaught.method.judging import (
    BalanceCounts,
    ItemState,
    balance,
    choose_correct,
    judge_items,
    sampling_rounds,
    sft_record,
)
from selftaught.method.selection import priority
from selftaught.stages.budget import fits
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult, sum_counts
from selftaught.store.jsonl import read_jsonl, write_jsonl
from selftaught.store.layout import PAIRS_TRAIN, checkpoint_output, sft_output
from selftaught.store.manifest import Manifest, published_key


def judge_model(ctx, iteration: int) -> ModelSource:
    """M(0) is the seed; M(i) is the checkpoint trained in iteration i."""
    if iteration == 0:
        return ctx.spec.models.seed
    return ModelSource(source=ctx.store.url(published_key(ctx.store, *checkpoint_output(iteration))))


class Judge(MapReduceStage):
    name = "judge"

    def model(self, ctx):
        return judge_model(ctx, ctx.stage.iteration - 1)

    def map_shard(self, ctx, shard, out, engine):
        settings, seed, iteration = ctx.spec.judge, ctx.spec.seed, ctx.stage.iteration
        pairs = in_shard(read_jsonl(ctx.store, published_key(ctx.store, *PAIRS_TRAIN)), shard, ctx.num_shards)
        states = [ItemState(item) for pair in pairs for item in judge_items(pair, settings.orders, seed)]
        # a pair whose judge prompt leaves no room for judge.maxTokens is dropped and counted: its
        # answers were generated, so it is no user's bad record
        room = fits(engine, [s.item.messages() for s in states], settings.max_tokens)
        too_long = room.count(False)
        states = [state for state, fit in zip(states, room, strict=True) if fit]
        counts: Counter[str] = Counter(items=len(states), kept=0, a_wins=0, b_wins=0, rounds=0, too_long=too_long)
        ctx.progress.start(len(states) * settings.samples)  # the fixed-N budget: an item kept early counts its unused samples
        pending = states
        for number, size in enumerate(sampling_rounds(settings.samples, settings.first_round, settings.adaptive)):
            if not pending:
                break
            counts["rounds"] += 1
            sampling = Sampling(n=size, temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens)
            # per-request seeds: a resumed shard draws exactly the samples the killed one drew
            seeds = [priority(seed, f"judge:{iteration}:{s.item.key}:{number}") % 2**31 for s in pending]
            results = engine.chat([s.item.messages() for s in pending], sampling, seeds)
            still_pending = []
            for state, request_seed, samples in zip(pending, seeds, results, strict=True):
                kept = choose_correct(state, samples, random.Random(request_seed))
                if kept is None:
                    still_pending.append(state)
                    continue
                out.write(kept)
                ctx.progress.advance(settings.samples - state.samples)
                counts["kept"] += 1
                counts["a_wins" if kept["winner"] == "A" else "b_wins"] += 1
            pending = still_pending
        for state in states:
            counts["samples"] += state.samples
            counts["tokens"] += state.tokens
            counts["unparsed"] += state.unparsed
            counts["truncated"] += state.truncated
        return ShardResult(dict(counts))

    def reduce(self, ctx, shard_manifests):
        counts = sum_counts(shard_manifests)
        items, kept = int(counts.get("items", 0)), int(counts.get("kept", 0))
        if kept == 0:
            raise NoTrainingData(
                f"iteration {ctx.stage.iteration}: the judge found no correct verdict for any of "
                f"{items} items ({int(counts.get('samples', 0))} samples, "
                f"{int(counts.get('unparsed', 0))} without a [[A]]/[[B]] verdict); "
                "its samples are kept in the store"
            )
        tally = BalanceCounts(a_wins=int(counts["a_wins"]), b_wins=int(counts["b_wins"]))
        records = (
            record
            for manifest in shard_manifests
            for key in manifest.outputs
            for record in read_jsonl(ctx.store, key)
        )
        key = ctx.output_key(sft_output(ctx.stage.iteration)[1])
        judge_settings = ctx.spec.judge
        chosen = balance(records, tally, ctx.spec.seed) if judge_settings.balance else records
        written = write_jsonl(ctx.store, key, (sft_record(r) for r in chosen))
        samples, tokens = counts.get("samples", 0), counts.get("tokens", 0)
        fixed_tokens = items * judge_settings.samples * (tokens / samples if samples else 0)
        summary = {
            "tried": items,
            "kept": kept,
            "keepRate": round(kept / items, 4) if items else 0.0,
            "trainingExamples": written.records,
            "truncated": int(counts.get("truncated", 0)),
            "tokensPerKept": round(tokens / kept, 1),
            "fixedNTokensPerKept": round(fixed_tokens / kept, 1),
            **({"tooLong": int(counts["too_long"])} if counts.get("too_long") else {}),
        }
        counts.update(training_examples=written.records, fixed_n_tokens_estimate=fixed_tokens)
        return Manifest(
            stage=self.name,
            counts=counts,
            outputs={key: written.as_dict()},
            seconds=sum(m.seconds for m in shard_manifests),
            summary=summary,
        )
