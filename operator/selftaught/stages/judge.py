"""judge (iteration i): judge M(i-1) annotates the training pairs by adaptive rejection sampling;
one correct judgment is kept per item, then A/B winners are balanced into SFT records.

Besides the SFT records the stage publishes `judged.jsonl`: every item it tried with the samples it
drew and the correct ones among them. The next iteration's judge sizes its rounds from it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from selftaught.chat import ChatEngine, Messages, Sample, Sampling
from selftaught.errors import NoTrainingData
from selftaught.method.judging import BalanceCounts, ItemState, RatingItem, balance, judge_items, preference_record, sample_in_rounds, sft_records
from selftaught.method.sampling import Evidence, Schedule
from selftaught.method.selection import priority
from selftaught.stages.budget import fits
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult, sum_counts
from selftaught.store.jsonl import read_jsonl, write_jsonl
from selftaught.store.layout import PAIRS_TRAIN, judged_output, preference_output, sft_output
from selftaught.store.manifest import Manifest, published_key


def chat_per_item(
    engine: ChatEngine, conversations: Sequence[Messages], sizes: Sequence[int], sampling: Sampling, seeds: Sequence[int]
) -> list[list[Sample]]:
    """`sizes[i]` samples of conversation i, in one engine call (one batch) whatever the sizes: one
    request with n = size per conversation when the sizes agree; else each conversation once per
    sample with n = 1, seeded from its request's seed. The two are the same work for vLLM, which
    runs a request with n > 1 as n requests that share the prompt through its prefix cache."""
    if len(set(sizes)) == 1:
        return engine.chat(conversations, replace(sampling, n=sizes[0]), seeds)
    copies = [(i, j) for i, size in enumerate(sizes) for j in range(size)]
    drawn = engine.chat([conversations[i] for i, _ in copies], replace(sampling, n=1), [priority(seeds[i], f"sample:{j}") % 2**31 for i, j in copies])
    results: list[list[Sample]] = [[] for _ in conversations]
    for (i, _), samples in zip(copies, drawn, strict=True):
        results[i].extend(samples)
    return results


def chat_per_conversation(
    engine: ChatEngine, states: Sequence[ItemState], sizes: Sequence[int], sampling: Sampling, seeds: Sequence[int]
) -> list[list[Sample]]:
    """One round for `states`: each item's conversations (a pairwise item has one, a pointwise item
    one per answer) with the item's size, in one engine call; an item's samples come back as its
    conversations' samples end to end. The second answer's ratings get their own seed."""
    conversations, counts, per_sizes, per_seeds = [], [], [], []
    for state, size, seed in zip(states, sizes, seeds, strict=True):
        mine = state.item.conversations()
        conversations += mine
        counts.append(len(mine))
        per_sizes += [size] * len(mine)
        per_seeds += [seed if j == 0 else priority(seed, f"conversation:{j}") % 2**31 for j in range(len(mine))]
    drawn = iter(chat_per_item(engine, conversations, per_sizes, sampling, per_seeds))
    return [[sample for _ in range(count) for sample in next(drawn)] for count in counts]


def judged_record(record: dict) -> dict:
    """An item's line of `judged.jsonl` from its shard record (a shard written before `correct`
    was counted holds only items kept with a correct judgment: at least one)."""
    return {"id": record["id"], "order": record["order"], "samples": record["samples"], "correct": record.get("correct", 1)}


def judged_before(ctx, iteration: int, keys: set[str]) -> dict[str, Evidence]:
    """What iteration `iteration` - 1 drew for the items `keys` (pair id and order): nothing in
    iteration 1, nor from a store whose judge kept no such record (written before it did)."""
    if iteration == 1:
        return {}
    key = published_key(ctx.store, *judged_output(iteration - 1))
    if not ctx.store.exists(key):
        return {}
    found = {}
    for record in read_jsonl(ctx.store, key):
        item = f"{record['id']}:{record['order']}"
        if item in keys:
            found[item] = Evidence(int(record["samples"]), int(record["correct"]))
    return found


class Judge(MapReduceStage):
    name = "judge"

    def model(self, ctx):
        return ctx.model(ctx.stage.iteration - 1)

    def map_shard(self, ctx, shard, out, engine):
        settings, seed, iteration = ctx.spec.judge, ctx.spec.seed, ctx.stage.iteration
        pairs = in_shard(read_jsonl(ctx.store, published_key(ctx.store, *PAIRS_TRAIN)), shard, ctx.num_shards)
        dpo = ctx.spec.train.method == "dpo"  # then an item samples until it has a right and a wrong judgment, or N
        states = [
            ItemState(item, wants_rejected=dpo) for pair in pairs for item in judge_items(pair, settings.orders, seed, settings.format)
        ]
        # an item whose prompts leave no room for judge.maxTokens is dropped and counted: its
        # answers were generated, so it is no user's bad record
        room = fits(engine, [c for s in states for c in s.item.conversations()], settings.max_tokens)
        fit = iter(room)
        fitting = [all(next(fit) for _ in state.item.conversations()) for state in states]
        too_long = fitting.count(False)
        states = [state for state, ok in zip(states, fitting, strict=True) if ok]
        history = judged_before(ctx, iteration, {state.item.key for state in states})
        for state in states:
            state.history = history.get(state.item.key, state.history)
        counts: Counter[str] = Counter(
            items=len(states), kept=0, a_wins=0, b_wins=0, rounds=0, requests=0, too_long=too_long, with_history=len(history)
        )
        ctx.progress.start(len(states) * settings.samples)  # the fixed-N budget: an item kept early counts its unused samples
        sampling = Sampling(temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens)

        def draw(pending: Sequence[ItemState], sizes: Sequence[int], seeds: Sequence[int]) -> list[list[Sample]]:
            counts["rounds"] += 1
            counts["requests"] += len(pending)
            return chat_per_conversation(engine, pending, sizes, sampling, seeds)

        def seed_of(state: ItemState, number: int) -> int:
            # per-request seeds: a resumed shard draws exactly the samples the killed one drew
            return priority(seed, f"judge:{iteration}:{state.item.key}:{number}") % 2**31

        for state in sample_in_rounds(states, Schedule.of(settings), draw, seed_of):
            out.write(self._record(state))
            ctx.progress.advance(settings.samples - state.samples)
        for state in states:
            if not state.done:  # no correct judgment in N (the next iteration learns from it too), or no wrong one
                out.write(self._record(state))
            if state.kept is not None:
                counts["kept"] += 1
                counts["kept_pointwise" if isinstance(state.item, RatingItem) else "kept_pairwise"] += 1
                if state.kept["winner"] and (not dpo or state.rejected is not None):  # pairwise training data: balanced by its winner
                    counts["a_wins" if state.kept["winner"] == "A" else "b_wins"] += 1
            if dpo:
                counts["pairs" if state.done else "no_correct" if state.kept is None else "no_wrong"] += 1
                if state.kept is not None:  # what looking for a wrong judgment cost beyond the right one
                    counts["samples_for_rejected"] += state.samples - state.kept["samples"]
            counts["samples"] += state.samples
            counts["tokens"] += state.tokens
            counts["unparsed"] += state.unparsed
            counts["truncated"] += state.truncated
            counts["ties"] += state.ties  # pointwise: why a rated pair was not kept
            counts["inverted"] += state.inverted
        return ShardResult(dict(counts))

    @staticmethod
    def _record(state) -> dict:
        """An item's shard line: its kept judgment (and a rejected one for DPO), or its tally."""
        if state.kept is None:
            return state.tally()
        return {**state.kept, "rejected": state.rejected} if state.rejected is not None else state.kept

    def reduce(self, ctx, shard_manifests):
        counts = sum_counts(shard_manifests)
        items, kept = int(counts.get("items", 0)), int(counts.get("kept", 0))
        if why := nothing_to_train(counts, ctx.spec, ctx.stage.iteration):
            raise NoTrainingData(why)
        dpo = ctx.spec.train.method == "dpo"
        tally = BalanceCounts(a_wins=int(counts["a_wins"]), b_wins=int(counts["b_wins"]))

        def records():  # every item the shards tried; those with a kept judgment have one
            return (record for manifest in shard_manifests for key in manifest.outputs for record in read_jsonl(ctx.store, key))

        # what training gets: one correct judgment per item (SFT), or a correct and a wrong one (DPO)
        usable = (record for record in records() if ("rejected" in record if dpo else "judgment" in record or "rated" in record))
        key = ctx.output_key((preference_output if dpo else sft_output)(ctx.stage.iteration)[1])
        judge_settings = ctx.spec.judge
        chosen = balance(usable, tally, ctx.spec.seed) if judge_settings.balance else usable
        examples = (preference_record(r) for r in chosen) if dpo else (example for r in chosen for example in sft_records(r))
        written = write_jsonl(ctx.store, key, examples)
        judged_key = ctx.output_key(judged_output(ctx.stage.iteration)[1])
        judged = write_jsonl(ctx.store, judged_key, (judged_record(r) for r in records()))
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
            **({"pairs": int(counts["pairs"]), "alwaysRight": int(counts.get("no_wrong", 0))} if dpo else {}),
            **(
                {"keptPointwise": int(counts.get("kept_pointwise", 0)), "ties": int(counts.get("ties", 0)), "inverted": int(counts.get("inverted", 0))}
                if judge_settings.format != "pairwise"
                else {}
            ),
        }
        counts.update(training_examples=written.records, fixed_n_tokens_estimate=fixed_tokens)
        return Manifest(
            stage=self.name,
            counts=counts,
            outputs={key: written.as_dict(), judged_key: judged.as_dict()},
            seconds=sum(m.seconds for m in shard_manifests),
            summary=summary,
        )


def nothing_to_train(counts: dict[str, float], spec, iteration: int) -> str | None:
    """Why the shards' kept judgments give the train stage nothing to learn from, or None: said
    here, in the judge's words, rather than as an empty dataset one stage later."""
    items, kept = int(counts.get("items", 0)), int(counts.get("kept", 0))
    where = f"iteration {iteration}: "
    if kept == 0:
        return (
            f"{where}the judge found no correct verdict for any of {items} items ({int(counts.get('samples', 0))} samples, "
            f"{int(counts.get('unparsed', 0))} without a [[A]]/[[B]] verdict or a 1-10 rating); its samples are kept in the store"
        )
    if spec.train.method == "dpo" and not counts.get("pairs"):
        return (
            f"{where}train.method dpo needs an item with a correct and a wrong judgment, and none of {items} items had both in "
            f"judge.samples={spec.judge.samples} ({int(counts.get('no_wrong', 0))} always right, "
            f"{int(counts.get('no_correct', 0))} never right); its samples are kept in the store"
        )
    a_wins, b_wins = int(counts.get("a_wins", 0)), int(counts.get("b_wins", 0))
    if spec.judge.balance and min(a_wins, b_wins) == 0 and not counts.get("kept_pointwise"):
        what = "pairs of a correct and a wrong judgment" if spec.train.method == "dpo" else "correct judgments"
        return (
            f"{where}judge.balance keeps as many [[A]] as [[B]] winners, and the {a_wins + b_wins} {what} kept all name "
            f"{'B' if b_wins else 'A'} (A {a_wins}, B {b_wins}): nothing is left to train on; more judge.samples, or "
            "judge.balance: false, trains on them as they are; its samples are kept in the store"
        )
    return None
