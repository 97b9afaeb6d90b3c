"""Judgment annotation by rejection sampling, made adaptive.

The label of every pair is known by construction, so a sampled judgment is "correct" when its
verdict names the chosen answer. The paper samples N judgments and keeps one correct judgment at
random. Sampling in rounds and stopping as soon as an item has a correct judgment keeps the same
distribution over kept judgments (a uniformly random correct sample of the round that found one)
while most items stop after the first, small round.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from selftaught.chat import Messages, Sample
from selftaught.method.parsing import Verdict, parse_verdict
from selftaught.method.prompts import judge_messages
from selftaught.method.selection import priority

Order = Literal["AB", "BA"]  # AB: the chosen answer is shown as A


@dataclass(frozen=True)
class JudgeItem:
    """One pair shown in one order."""

    example_id: str
    order: Order
    instruction: str
    chosen: str
    rejected: str

    @property
    def key(self) -> str:
        return f"{self.example_id}:{self.order}"

    @property
    def expected(self) -> Verdict:
        return "A" if self.order == "AB" else "B"

    def messages(self) -> Messages:
        a, b = (self.chosen, self.rejected) if self.order == "AB" else (self.rejected, self.chosen)
        return judge_messages(self.instruction, a, b)


def random_order(example_id: str, seed: int) -> Order:
    """One reproducible random order per example (RewardBench's `is_shuffled`)."""
    return "BA" if priority(seed, f"order:{example_id}") & 1 else "AB"


def judge_items(pair: dict[str, Any], orders: str, seed: int) -> list[JudgeItem]:
    chosen_orders: list[Order] = ["AB", "BA"] if orders == "both" else [random_order(pair["id"], seed)]
    return [
        JudgeItem(pair["id"], order, pair["instruction"], pair["chosen"], pair["rejected"])
        for order in chosen_orders
    ]


def sampling_rounds(samples: int, first_round: int, adaptive: bool) -> list[int]:
    """Round sizes adding up to N: [N] when fixed, else doubling from `first_round`."""
    if not adaptive:
        return [samples]
    rounds, size, left = [], first_round, samples
    while left > 0:
        rounds.append(min(size, left))
        left -= rounds[-1]
        size *= 2
    return rounds


@dataclass
class ItemState:
    """What has been sampled for one item so far."""

    item: JudgeItem
    samples: int = 0
    tokens: int = 0
    unparsed: int = 0
    truncated: int = 0
    kept: dict[str, Any] | None = None


def choose_correct(
    state: ItemState, round_samples: list[Sample], rng: random.Random
) -> dict[str, Any] | None:
    """Record one round for an item; return the kept judgment when a sampled verdict is right."""
    state.samples += len(round_samples)
    state.tokens += sum(s.tokens for s in round_samples)
    correct = []
    for sample in round_samples:
        if sample.truncated:  # its verdict, if any, was never finished: never kept
            state.truncated += 1
            continue
        verdict = parse_verdict(sample.text)
        if verdict is None:
            state.unparsed += 1
        elif verdict == state.item.expected:
            correct.append(sample)
    if not correct:
        return None
    pick = rng.choice(correct)
    item = state.item
    state.kept = {
        "id": item.example_id,
        "order": item.order,
        "winner": item.expected,
        "messages": item.messages(),
        "judgment": pick.text.strip(),
        "samples": state.samples,
    }
    return state.kept


@dataclass
class BalanceCounts:
    a_wins: int = 0
    b_wins: int = 0

    @property
    def target(self) -> int:
        return min(self.a_wins, self.b_wins)


def balance(records: Iterable[dict[str, Any]], counts: BalanceCounts, seed: int) -> Iterator[dict[str, Any]]:
    """Second streaming pass: keep every judgment of the rarer winner and a uniformly random
    equal-sized subset of the other (selection sampling, Knuth's Algorithm S: exact size, O(1)
    memory). The official code truncates the two sets to equal size the same way."""
    rng = random.Random(seed)
    majority = "A" if counts.a_wins > counts.b_wins else "B"
    left_to_see = max(counts.a_wins, counts.b_wins)
    left_to_take = counts.target
    for record in records:
        if counts.a_wins == counts.b_wins or record["winner"] != majority:
            yield record
            continue
        if rng.random() * left_to_see < left_to_take:
            left_to_take -= 1
            yield record
        left_to_see -= 1


def sft_record(kept: dict[str, Any]) -> dict[str, Any]:
    """A chat-format SFT example: the loss is taken on the assistant turn only."""
    return {
        "id": f"{kept['id']}:{kept['order']}",
        "messages": kept["messages"],
        "completion": kept["judgment"],
        "winner": kept["winner"],
    }
