"""evaluate (iteration i): judge M(i) on an evaluation set and score it exactly as the set's
benchmark does (`method.scoring`, the code behind `selftaught score`).

Each shard writes, per example, the judge's raw outputs in the scorer's record format; the reduce
scores all of them at once, so the stage's numbers are by construction what `selftaught score`
prints for the same file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from selftaught.api.benchmarks import BENCHMARKS
from selftaught.api.spec import Evaluate as EvaluateSettings
from selftaught.chat import ChatEngine, Messages, Sampling
from selftaught.method.judging import JudgeItem, random_order
from selftaught.method.prompts import judge_messages, rating_messages
from selftaught.method.scoring import score
from selftaught.method.selection import priority
from selftaught.stages.budget import Prompt, fitting
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult
from selftaught.stages.sources import MANIFEST_REASONS, Counted, located_evaluation_examples, merged, nothing_usable
from selftaught.store.jsonl import SkipCounter, numbered_jsonl, read_jsonl
from selftaught.store.layout import PAIRS_HELDOUT, metrics_output
from selftaught.store.manifest import Manifest, published_key

#: the official settings of RewardBench's and the paper's majority vote
VOTE_TEMPERATURE, VOTE_TOP_P = 0.7, 0.9


def evaluation_examples(ctx, skipped: SkipCounter) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, example): the evaluation source's, or the held-out pairs'."""
    data = ctx.spec.data.evaluation
    if data.source:
        return located_evaluation_examples(data, ctx.spec.evaluate.benchmark, ctx.spec.storage, skipped)
    key = published_key(ctx.store, *PAIRS_HELDOUT)
    return (
        (f"{ctx.store.url(key)}:{number}", {**pair, "subset": pair.get("subset") or "default"})
        for number, pair in numbered_jsonl(ctx.store, key)
    )


def evaluation_subject(ctx) -> str:
    """What the user calls the evaluation set, for messages."""
    source = ctx.spec.data.evaluation.source
    return f"data.evaluation.source {source}" if source else "the held-out pairs (pairs/heldout.jsonl)"


class Requests:
    """Conversations for one greedy batch, and where each answer goes in the records."""

    def __init__(self) -> None:
        self.conversations: list[Messages] = []
        self.slots: list[tuple[dict[str, Any], str, int | None]] = []

    def add(self, record: dict[str, Any], field: str, messages: Messages, index: int | None = None) -> None:
        self.conversations.append(messages)
        self.slots.append((record, field, index))

    def fill(self, answers) -> None:  # type: ignore[no-untyped-def]
        for (record, field, index), samples in zip(self.slots, answers, strict=True):
            if index is None:
                record[field] = samples[0].text
            else:
                record[field][index] = samples[0].text


def _pairwise(example: dict[str, Any], seed: int, settings, requests: Requests) -> dict[str, Any]:
    """RewardBench: one reproducible random order per example; optionally the swapped order. In
    rating mode each answer is rated on its own, in the same order (`run_judge_ratings`)."""
    order = random_order(example["id"], seed)
    item = JudgeItem(example["id"], order, example["prompt"], example["chosen"], example["rejected"])
    record: dict[str, Any] = {"id": example["id"], "subset": example["subset"], "winner": item.expected}
    if settings.mode == "rating":
        shown = (item.chosen, item.rejected) if order == "AB" else (item.rejected, item.chosen)
        record["rated"] = ["", ""]
        for index, answer in enumerate(shown):
            requests.add(record, "rated", rating_messages(example["prompt"], answer), index)
        return record
    requests.add(record, "output", item.messages())
    if settings.position_consistency:
        swapped = JudgeItem(example["id"], "BA" if order == "AB" else "AB", example["prompt"], example["chosen"], example["rejected"])
        requests.add(record, "swapped_output", swapped.messages())
    return record


def _both_orders(example: dict[str, Any], requests: Requests) -> dict[str, Any]:
    """JudgeBench: the pair as given, then swapped; the pair scores on the net vote."""
    record: dict[str, Any] = {"id": example["id"], "subset": example["subset"], "winner": example["winner"]}
    requests.add(record, "output", judge_messages(example["prompt"], example["a"], example["b"]))
    requests.add(record, "swapped_output", judge_messages(example["prompt"], example["b"], example["a"]))
    return record


def _ratings(example: dict[str, Any], requests: Requests) -> dict[str, Any]:
    """RewardBench 2: every answer rated on its own (the Ties subset with its own prompt)."""
    answers = example["answers"]
    record: dict[str, Any] = {"id": example["id"], "subset": example["subset"], "num_correct": example["num_correct"], "ratings": [""] * len(answers)}
    for index, answer in enumerate(answers):
        requests.add(record, "ratings", rating_messages(example["prompt"], answer, ties=example["subset"] == "Ties"), index)
    return record


def _request(example: dict[str, Any], benchmark: str, seed: int, settings, requests: Requests) -> dict[str, Any]:
    """The scorer's record of one example, its conversations added to `requests`: as the
    benchmark asks (`api/benchmarks.py`)."""
    asks = BENCHMARKS[benchmark].asks
    if asks == "rated":
        return _ratings(example, requests)
    if asks == "both orders":
        return _both_orders(example, requests)
    return _pairwise(example, seed, settings, requests)


def judge_examples(
    examples: list[dict[str, Any]], benchmark: str, settings: EvaluateSettings, seed: int, engine: ChatEngine, start: Callable[[int], None] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """The scorer's records of `examples` (the judge's greedy outputs, and its majority-vote samples
    when asked), and the tokens generated: what the stage writes per shard, and what
    `selftaught score --endpoint` scores for any OpenAI-compatible judge. `start` is told how many
    samples will be drawn."""
    requests = Requests()
    records = [_request(e, benchmark, seed, settings, requests) for e in examples]
    voting = bool(settings.majority_vote and BENCHMARKS[benchmark].majority_vote and settings.mode != "rating" and records)
    if start is not None:
        start(len(requests.conversations) + (len(records) * settings.majority_vote if voting else 0))
    tokens = 0
    if requests.conversations:
        answers = engine.chat(requests.conversations, Sampling(n=1, temperature=0.0, max_tokens=settings.max_tokens))
        tokens += sum(s.tokens for samples in answers for s in samples)
        requests.fill(answers)
    if voting:
        shown = [requests.conversations[i] for i, (_, field, _) in enumerate(requests.slots) if field == "output"]
        seeds = [priority(seed, f"vote:{r['id']}") % 2**31 for r in records]
        sampling = Sampling(n=settings.majority_vote, temperature=VOTE_TEMPERATURE, top_p=VOTE_TOP_P, max_tokens=settings.max_tokens)
        for record, samples in zip(records, engine.chat(shown, sampling, seeds), strict=True):
            record["outputs"] = [s.text for s in samples]
            tokens += sum(s.tokens for s in samples)
    return records, tokens


class Evaluate(MapReduceStage):
    name = "evaluate"

    def model(self, ctx):
        return ctx.model(ctx.stage.iteration)

    def map_shard(self, ctx, shard, out, engine):
        # the mode resolved: a pointwise judge is rated (evaluate.mode auto)
        settings, seed, benchmark = ctx.spec.evaluate.model_copy(update={"mode": ctx.spec.evaluation_mode}), ctx.spec.seed, ctx.spec.evaluation_benchmark
        skipped, too_long = SkipCounter(), SkipCounter()
        usable = Counted(evaluation_examples(ctx, skipped))
        located = list(in_shard(usable, shard, ctx.num_shards))
        if not usable.count:  # every shard read the whole set: none of them has an example
            raise nothing_usable(evaluation_subject(ctx), "example to evaluate", skipped)

        def prompts(example: dict[str, Any]) -> list[Prompt]:  # exactly what the judge is shown
            shown = Requests()
            _request(example, benchmark, seed, settings, shown)
            return [(messages, settings.max_tokens, "evaluate.maxTokens") for messages in shown.conversations]

        data = ctx.spec.data.evaluation
        examples = fitting(
            engine, located, prompts, on_bad_record=data.on_bad_record, policy_field="data.evaluation.onBadRecord", skipped=too_long
        )
        if not examples and ctx.num_shards == 1:  # known now: fail before a marker says "done"
            raise nothing_usable(evaluation_subject(ctx), "example to evaluate", merged(skipped, too_long))
        records, tokens = judge_examples(examples, benchmark, settings, seed, engine, ctx.progress.start)
        for record in records:
            out.write(record)
        # every shard reads the same set, so only shard 0 reports what the reader skipped
        read = skipped if shard == 0 else SkipCounter()
        counts = {"examples": len(records), "too_long": too_long.skipped, "skipped_records": read.skipped + too_long.skipped, "tokens": tokens}
        return ShardResult(counts, skipped=merged(read, too_long).examples)

    def reduce(self, ctx, shard_manifests):
        benchmark = ctx.spec.evaluation_benchmark
        reasons = [reason for m in shard_manifests for reason in m.skipped]
        skipped = int(sum(m.counts.get("skipped_records", 0) for m in shard_manifests))
        if not sum(m.counts.get("examples", 0) for m in shard_manifests):  # never an accuracy over nothing
            raise nothing_usable(evaluation_subject(ctx), "example to evaluate", SkipCounter(skipped, reasons[:5]))
        records = (record for manifest in shard_manifests for key in sorted(manifest.outputs) for record in read_jsonl(ctx.store, key))
        report = score(records, benchmark)
        report["iteration"] = ctx.stage.iteration
        key = ctx.output_key(metrics_output(ctx.stage.iteration)[1])
        ctx.store.write_text(key, json.dumps(report, indent=2))
        return Manifest(
            stage=self.name,
            counts={"examples": report["examples"], "skipped_records": skipped, "tokens": sum(m.counts.get("tokens", 0) for m in shard_manifests)},
            outputs={key: {}},
            seconds=sum(m.seconds for m in shard_manifests),
            summary={**summarize(report), **({"skipped": skipped} if skipped else {})},
            skipped=reasons[:MANIFEST_REASONS],
        )


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the status, the events and `selftaught run` show."""
    summary: dict[str, Any] = {"benchmark": report["benchmark"], "examples": report["examples"]}
    if report.get("accuracy") is not None:
        summary["accuracy"] = round(report["accuracy"], 4)
    if report.get("overall") is not None:
        summary["overall"] = round(report["overall"], 4)
    if report.get("partial") and report.get("overall") is not None:  # said, never silent: fewer sections or subsets
        missing = report.get("missing") or []
        summary["partial"] = ", ".join(missing) if missing else f"{len(report.get('missing_subsets') or [])} subsets missing"
    custom = report.get("custom") or {}
    if custom.get("examples"):
        summary["custom"] = round(custom["score"], 4)
    errors = sum(report.get("errors", {}).values())
    if errors:
        summary["unparsed"] = errors
    if report.get("position_consistent") is not None:
        summary["positionConsistent"] = round(report["position_consistent"], 4)
    vote = report.get("majority_vote")
    if vote:
        summary["majorityVote"] = round(vote["overall"] if vote.get("overall") is not None else vote["accuracy"], 4)
    return summary
