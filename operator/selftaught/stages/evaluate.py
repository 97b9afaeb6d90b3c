"""evaluate (iteration i): judge M(i) on an evaluation set and score it exactly as the set's
benchmark does (`method.scoring`, the code behind `selftaught score`).

Each shard writes, per example, the judge's raw outputs in the scorer's record format; the reduce
scores all of them at once, so the stage's numbers are by construction what `selftaught score`
prints for the same file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from selftaught.api.benchmarks import BENCHMARKS
from selftaught.api.spec import Evaluate as EvaluateSettings
from selftaught.chat import ChatEngine, Messages, Sampling
from selftaught.method.judging import JudgeItem, random_order
from selftaught.method.parsing import Verdict, parse_rewardbench_verdict
from selftaught.method.prompts import judge_messages, rating_messages
from selftaught.method.scoring import score
from selftaught.method.selection import priority
from selftaught.method.voting import Tally, stop_rule, vote_in_rounds
from selftaught.stages.budget import Prompt, fitting
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult
from selftaught.stages.sources import MANIFEST_REASONS, Counted, located_evaluation_examples, merged, nothing_usable
from selftaught.store.jsonl import SkipCounter, numbered_jsonl, read_jsonl
from selftaught.store.layout import PAIRS_HELDOUT, metrics_output
from selftaught.store.manifest import Manifest, published_key

#: what the report and the summary call the run's own held-out pairs (scored in RewardBench's
#: format, but never a RewardBench number)
HELD_OUT_PAIRS = "held-out pairs"
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


@dataclass
class Judged:
    """What `judge_examples` returns: the scorer's records, the tokens generated, and what the
    majority votes drew against all k (zero without a vote)."""

    records: list[dict[str, Any]]
    tokens: int = 0
    vote_samples: int = 0  #: samples the votes drew
    vote_all: int = 0  #: what drawing all k for every example would have drawn
    vote_tokens: int = 0  #: tokens of the samples the votes drew
    vote_rounds: int = 0  #: requests' rounds: a vote's round is one request per sample, its prompt prefix-cached

    @property
    def vote_tokens_saved(self) -> int:
        """The votes' tokens not generated: the samples not drawn at the drawn ones' mean length."""
        return round((self.vote_all - self.vote_samples) * self.vote_tokens / self.vote_samples) if self.vote_samples else 0


def vote_seed(seed: int, example_id: str, number: int) -> int:
    """The seed of sample `number` of an example's vote: the same sample whether the vote stops
    early or draws all k, in whatever round it is drawn."""
    return priority(seed, f"vote:{example_id}:{number}") % 2**31


def judge_examples(
    examples: list[dict[str, Any]],
    benchmark: str,
    settings: EvaluateSettings,
    seed: int,
    engine: ChatEngine,
    start: Callable[[int], None] | None = None,
    skip: Callable[[int], None] | None = None,
) -> Judged:
    """The scorer's records of `examples` (the judge's greedy outputs, and its majority-vote samples
    when asked), and the tokens generated: what the stage writes per shard, and what
    `selftaught score --endpoint` scores for any OpenAI-compatible judge. `start` is told how many
    samples would be drawn with all k per vote; `skip` how many a vote that stopped early did not
    draw (`method/voting.py`)."""
    requests = Requests()
    records = [_request(e, benchmark, seed, settings, requests) for e in examples]
    k = settings.majority_vote
    voting = bool(k and BENCHMARKS[benchmark].majority_vote and settings.mode != "rating" and records)
    if start is not None:
        start(len(requests.conversations) + (len(records) * k if voting else 0))
    judged = Judged(records)
    if requests.conversations:
        answers = engine.chat(requests.conversations, Sampling(n=1, temperature=0.0, max_tokens=settings.max_tokens))
        judged.tokens += sum(s.tokens for samples in answers for s in samples)
        requests.fill(answers)
    if voting:
        shown = [requests.conversations[i] for i, (_, field, _) in enumerate(requests.slots) if field == "output"]
        sampling = Sampling(n=1, temperature=VOTE_TEMPERATURE, top_p=VOTE_TOP_P, max_tokens=settings.max_tokens)
        for record in records:
            record["outputs"] = []

        def draw(wanted: Sequence[tuple[int, int, int]]) -> list[list[Verdict | None]]:
            """One round, one batch: a request per sample, seeded by its number (vLLM runs a request
            with n > 1 as n such requests sharing the prompt through its prefix cache)."""
            copies = [(vote, number) for vote, first, size in wanted for number in range(first, first + size)]
            seeds = [vote_seed(seed, records[vote]["id"], number) for vote, number in copies]
            drawn = engine.chat([shown[vote] for vote, _ in copies], sampling, seeds)
            judged.vote_rounds += len(wanted)
            verdicts: dict[int, list[Verdict | None]] = {vote: [] for vote, _, _ in wanted}
            for (vote, _), samples in zip(copies, drawn, strict=True):
                for sample in samples:  # the scorer's parse of the text, as written
                    records[vote]["outputs"].append(sample.text)
                    verdicts[vote].append(parse_rewardbench_verdict(sample.text))
                    judged.vote_tokens += sample.tokens
            return [verdicts[vote] for vote, _, _ in wanted]

        def stopped(vote: int, tally: Tally) -> None:  # its samples not drawn count as done
            if skip is not None and tally.drawn < k:
                skip(k - tally.drawn)

        tallies = vote_in_rounds(k, len(records), stop_rule(settings.early_stop, settings.flip_risk), draw, finished=stopped)
        judged.vote_samples = sum(t.drawn for t in tallies)
        judged.vote_all = k * len(records)
        judged.tokens += judged.vote_tokens
    return judged


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
        judged = judge_examples(examples, benchmark, settings, seed, engine, ctx.progress.start, ctx.progress.advance)
        for record in judged.records:
            out.write(record)
        # every shard reads the same set, so only shard 0 reports what the reader skipped
        read = skipped if shard == 0 else SkipCounter()
        counts = {
            "examples": len(judged.records), "too_long": too_long.skipped, "skipped_records": read.skipped + too_long.skipped,
            "tokens": judged.tokens, **(vote_counts(judged) if judged.vote_all else {}),
        }  # fmt: skip
        return ShardResult(counts, skipped=merged(read, too_long).examples)

    def reduce(self, ctx, shard_manifests):
        benchmark = ctx.spec.evaluation_benchmark
        reasons = [reason for m in shard_manifests for reason in m.skipped]
        skipped = int(sum(m.counts.get("skipped_records", 0) for m in shard_manifests))
        if not sum(m.counts.get("examples", 0) for m in shard_manifests):  # never an accuracy over nothing
            raise nothing_usable(evaluation_subject(ctx), "example to evaluate", SkipCounter(skipped, reasons[:5]))
        records = (record for manifest in shard_manifests for key in sorted(manifest.outputs) for record in read_jsonl(ctx.store, key))
        report = score(records, benchmark, outcomes=True)  # per example: the report's paired test of two iterations
        report["iteration"] = ctx.stage.iteration
        if not ctx.spec.data.evaluation.source:  # the run's own pairs: never named for the format they are scored in
            report["evaluated"] = HELD_OUT_PAIRS
        votes = {name: int(sum(m.counts.get(name, 0) for m in shard_manifests)) for name in VOTE_COUNTS}  # counts: whole numbers (a manifest stores floats)
        if votes["vote_all"]:
            report["vote"] = vote_report(votes, ctx.spec.evaluate)
        key = ctx.output_key(metrics_output(ctx.stage.iteration)[1])
        metrics = json.dumps(report, indent=2).encode()
        ctx.store.write_bytes(key, metrics)
        counts = {"examples": report["examples"], "skipped_records": skipped, "tokens": sum(m.counts.get("tokens", 0) for m in shard_manifests)}
        return Manifest(
            stage=self.name,
            counts={**counts, **(votes if votes["vote_all"] else {})},
            outputs={key: {"bytes": len(metrics), "sha256": hashlib.sha256(metrics).hexdigest()}},
            seconds=sum(m.seconds for m in shard_manifests),
            summary={**summarize(report), **({"skipped": skipped} if skipped else {})},
            skipped=reasons[:MANIFEST_REASONS],
        )


#: a shard's and the stage's counts of its majority votes (`Judged`)
VOTE_COUNTS = ("vote_samples", "vote_all", "vote_tokens", "vote_tokens_saved", "vote_rounds")


def vote_counts(judged: Judged) -> dict[str, int]:
    return {
        "vote_samples": judged.vote_samples, "vote_all": judged.vote_all, "vote_tokens": judged.vote_tokens,
        "vote_tokens_saved": judged.vote_tokens_saved, "vote_rounds": judged.vote_rounds,
    }  # fmt: skip


def vote_report(votes: dict[str, int], settings: EvaluateSettings) -> dict[str, Any]:
    """What the majority votes drew against all k: in metrics.json and, shorter, the summary."""
    examples = votes["vote_all"] / settings.majority_vote
    return {
        "k": settings.majority_vote,
        "early_stop": settings.early_stop,
        **({"flip_risk": settings.flip_risk} if settings.early_stop == "approximate" else {}),
        "samples": votes["vote_samples"],
        "samples_all_k": votes["vote_all"],
        "samples_per_example": round(votes["vote_samples"] / examples, 3),
        "rounds_per_example": round(votes["vote_rounds"] / examples, 3),
        "tokens": votes["vote_tokens"],
        "tokens_saved": votes["vote_tokens_saved"],
    }


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the status, the events and `selftaught run` show: what was evaluated, each
    accuracy with its 95 % interval (`[low, high]`), and why a number is not the leaderboard's when
    it is not."""
    intervals = report.get("intervals") or {}
    summary: dict[str, Any] = {"evaluated": report.get("evaluated") or report["benchmark"], "examples": report["examples"]}

    def number(key: str, value: float | None, interval: dict[str, Any] | None) -> None:
        if value is not None:  # 4 decimals, as events and the status show them; full precision in metrics.json
            summary[key] = round(value, 4)
            if interval:
                summary[f"{key}Interval"] = [round(interval["low"], 4), round(interval["high"], 4)]

    number("accuracy", report.get("accuracy"), intervals.get("accuracy"))
    number("overall", report.get("overall"), intervals.get("overall"))
    if report.get("partial") and (report.get("sections") or report.get("overall") is not None):  # said, never silent: fewer sections or subsets
        missing = [f"{name} (NaN: no prompt with both its ref and tied records)" if name in report.get("sections", {}) else name for name in report.get("missing") or []]
        summary["partial"] = ", ".join(missing) if missing else f"{len(report.get('missing_subsets') or [])} subsets missing"
    if report.get("rating_mode") and report["benchmark"] == "rewardbench":
        summary["notComparable"] = "rating mode (each answer rated alone), not the leaderboard's pairwise verdict"
    custom = report.get("custom") or {}
    if custom.get("examples") and custom["examples"] < report["examples"]:  # beside a benchmark's numbers; else it is the accuracy
        number("custom", custom["score"], intervals.get("custom"))
    errors = sum(report.get("errors", {}).values())
    if errors:
        summary["unparsed"] = errors
    number("positionConsistent", report.get("position_consistent"), intervals.get("position_consistent"))
    orders = report.get("orders")
    if orders:  # the paper's numbers: each order, and their mean
        for key, name in (("orderA", "right_is_a"), ("orderB", "right_is_b"), ("bothOrders", "both")):
            number(key, orders[name], (intervals.get("orders") or {}).get(name))
    vote = report.get("majority_vote")
    if vote:
        headline = "overall" if vote.get("overall") is not None else "accuracy"
        number("majorityVote", vote[headline], (vote.get("intervals") or {}).get(headline))
    drawn = report.get("vote")
    if drawn:  # what stopping the votes early saved
        summary["voteSamplesPerExample"] = drawn["samples_per_example"]
        summary["voteTokens"] = drawn["tokens"]
        summary["voteTokensSaved"] = drawn["tokens_saved"]
    return summary
