"""Calling a judge: pairs in, verdicts out, through any OpenAI-compatible endpoint (the server of
`selftaught serve` or of `spec.serve`, vLLM, a hosted model). Also scoring such an endpoint on a
benchmark exactly as the `evaluate` stage scores a run's judge (`selftaught score --endpoint`).

    from selftaught.client import JudgeClient, Pair

    judge = JudgeClient("http://127.0.0.1:8000/v1")
    for result in judge.judge([Pair("What is 2 + 2?", "4", "5")]):
        print(result.verdict, result.consistent, result.reasoning[0])

The judge is asked with its own training prompt (`method.prompts.judge_messages`) and read with
its own parser (`method.parsing.parse_verdict`). What is asked of each item and how the answers
become a result is a `Format`: today the pairwise one; a judge trained for pointwise ratings
would add its own format, with the prompt it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from selftaught.api.spec import Evaluate as EvaluateSettings
from selftaught.api.spec import EvaluationData
from selftaught.chat import ChatEngine, Messages, Sample, Sampling
from selftaught.engines.endpoint import EndpointEngine
from selftaught.errors import InvalidInput
from selftaught.method.parsing import Verdict, parse_verdict
from selftaught.method.prompts import judge_messages
from selftaught.method.scoring import score
from selftaught.stages.evaluate import judge_examples
from selftaught.stages.sources import located_evaluation_examples, nothing_usable
from selftaught.store.jsonl import SkipCounter, local_json_objects

#: the evaluate stage's default judgment length
MAX_TOKENS = EvaluateSettings().max_tokens
#: bad lines named in one error; the count says how many more
SHOWN_BAD_LINES = 10
Item = TypeVar("Item")


class Format(Protocol[Item]):
    """How one kind of item is put to the judge and how its answers are read."""

    def read(self, record: dict[str, Any]) -> Item | str:
        """The item of one input record, or why the record is not one."""
        ...

    def conversations(self, item: Item) -> list[Messages]:
        """What the judge is shown for the item (one greedy answer each)."""
        ...

    def result(self, item: Item, answers: list[Sample]) -> Any:
        """The item's result from the judge's answers to its conversations, in order."""
        ...


@dataclass(frozen=True)
class Pair:
    """Two responses to one instruction; which is better is what the judge says."""

    instruction: str
    response_a: str
    response_b: str
    id: str | None = None


@dataclass(frozen=True)
class PairVerdict:
    id: str | None
    #: the better response by the net of the orders judged (JudgeBench's rule: +1 per order naming
    #: a response); None when the orders cancel out or the judge wrote no verdict
    verdict: Verdict | None
    #: per order judged (as given, then swapped), in this pair's own letters; None: no verdict
    verdicts: list[Verdict | None]
    #: both orders name the same response; None when only one order was judged
    consistent: bool | None
    #: the judge's text per order judged
    reasoning: list[str]
    #: a judgment was cut off at max_tokens (its verdict, if any, is read all the same)
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flip(verdict: Verdict | None) -> Verdict | None:
    return {"A": "B", "B": "A"}.get(verdict) if verdict else None  # type: ignore[return-value]


def pair_verdict(pair_id: str | None, answers: Sequence[Sample]) -> PairVerdict:
    """A pair's result from the judge's answer to it as given and, if asked, swapped."""
    verdicts = [parse_verdict(answers[0].text)] + [_flip(parse_verdict(a.text)) for a in answers[1:2]]
    net = sum({"A": 1, "B": -1}.get(v, 0) for v in verdicts)  # type: ignore[arg-type]
    return PairVerdict(
        id=pair_id,
        verdict="A" if net > 0 else "B" if net < 0 else None,
        verdicts=verdicts,
        consistent=(verdicts[0] is not None and verdicts[0] == verdicts[1]) if len(verdicts) == 2 else None,
        reasoning=[a.text for a in answers],
        truncated=any(a.truncated for a in answers),
    )


@dataclass(frozen=True)
class Pairwise:
    """Which of two responses is better. `orders="both"` also shows the pair swapped: a verdict
    that flips with the order is a position bias, not a judgment (`consistent`)."""

    orders: Literal["both", "given"] = "both"

    def read(self, record: dict[str, Any]) -> Pair | str:
        missing = [f for f in ("instruction", "response_a", "response_b") if not isinstance(record.get(f), str) or not record[f].strip()]
        if missing:
            return f"missing {', '.join(missing)} (a pair is {{\"instruction\", \"response_a\", \"response_b\"}}, \"id\" optional)"
        pair_id = record.get("id")
        return Pair(record["instruction"], record["response_a"], record["response_b"], None if pair_id is None else str(pair_id))

    def conversations(self, item: Pair) -> list[Messages]:
        given = judge_messages(item.instruction, item.response_a, item.response_b)
        return [given] if self.orders == "given" else [given, judge_messages(item.instruction, item.response_b, item.response_a)]

    def result(self, item: Pair, answers: list[Sample]) -> PairVerdict:
        return pair_verdict(item.id, answers)


class JudgeClient(Generic[Item]):
    """A judge behind an OpenAI-compatible endpoint, asked greedily in one format."""

    def __init__(
        self, endpoint: str | ChatEngine, *, model: str | None = None, format: Format[Item] | None = None, max_tokens: int = MAX_TOKENS, **engine: Any
    ):
        self.engine: ChatEngine = EndpointEngine(endpoint, model, **engine) if isinstance(endpoint, str) else endpoint
        self.format: Format[Item] = format if format is not None else Pairwise()  # type: ignore[assignment]
        self.max_tokens = max_tokens

    def judge(self, items: Iterable[Item]) -> list[Any]:
        """One result per item, in order (requests go out together: the server batches them)."""
        items = list(items)
        asked = [self.format.conversations(item) for item in items]
        flat = [messages for conversations in asked for messages in conversations]
        answers = iter(self.engine.chat(flat, Sampling(n=1, temperature=0.0, max_tokens=self.max_tokens)) if flat else [])
        return [self.format.result(item, [next(answers)[0] for _ in conversations]) for item, conversations in zip(items, asked, strict=True)]

    def judge_file(self, path: str | Path) -> list[Any]:
        return self.judge(read_items(path, self.format))


def read_items(path: str | Path, format: Format[Item]) -> list[Item]:
    """Every item of a JSONL file; every bad line is named (`FILE:LINE: reason`) before anything
    is sent, so a long file fails at once, not after an hour of judging."""
    items: list[Item] = []
    bad: list[str] = []
    try:
        for number, record in local_json_objects(path):
            item = format.read(record) if isinstance(record, dict) else record
            if isinstance(item, str):
                bad.append(f"{path}:{number}: {item}")
            else:
                items.append(item)
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    if bad:
        more = f" (and {len(bad) - SHOWN_BAD_LINES} more bad lines)" if len(bad) > SHOWN_BAD_LINES else ""
        raise InvalidInput("\n".join(bad[:SHOWN_BAD_LINES]) + more)
    if not items:
        raise InvalidInput(f"{path}: no items (one JSON object per line)")
    return items


def score_endpoint(
    source: str, benchmark: str, engine: ChatEngine, settings: EvaluateSettings, *, seed: int = 0, skip_bad: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]], SkipCounter]:
    """(report, records, skipped) of the judge behind `engine` on an evaluation set in
    `benchmark`'s format (what `data.evaluation.source` takes): read by the evaluate stage's
    reader, asked by its code (the same random order per example for the same `seed`), scored by
    `method.scoring` — so the numbers compare with a run's."""
    data = EvaluationData(source=source, on_bad_record="skip" if skip_bad else "fail")
    skipped = SkipCounter()
    examples = [example for _, example in located_evaluation_examples(data, benchmark, None, skipped)]
    if not examples:
        raise nothing_usable(source, f"{benchmark} example", skipped)
    records = judge_examples(examples, benchmark, settings, seed, engine).records
    return score(records, benchmark), records, skipped


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Written whole, then renamed: an interrupted run leaves no half file."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(target)
