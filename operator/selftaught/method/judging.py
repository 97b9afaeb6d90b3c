"""Judgment annotation by rejection sampling, made adaptive.

The label of every pair is known by construction, so a sampled judgment is "correct" when its
verdict names the chosen answer. The paper samples N judgments and keeps one correct judgment at
random. Sampling in rounds and stopping as soon as an item has a correct judgment keeps the same
distribution over kept judgments (a uniformly random correct sample of the round that found one)
while most items stop after the first, small round; `method/sampling.py` sizes the rounds.

Why the kept judgments are distributed as with fixed N. An item's judgments are independent draws
from one distribution; the kept one is a correct one, so with fixed N it is distributed as a single
judgment conditioned on being correct, and the item is kept with probability 1 - (1-p)^N. With
rounds: suppose every round's size is fixed before that round is drawn, from anything but that
round's samples (the item's history from the previous iteration, this iteration's earlier rounds
of any item — the item's own were all wrong, or it would not be in the round). Given everything
before it, a round is then a fresh set of independent draws, and a uniformly random correct one of
them is again a judgment conditioned on being correct; the item is dropped only when all of its N
draws were wrong, probability (1-p)^N. Neither depends on how the N draws were cut into rounds.
What would break it: sizing a round from its own samples (stopping a round at its first correct
one, or drawing more when none is), choosing among the correct ones by anything but chance, or
stopping before N without a correct one. `tests/unit/test_judging.py` checks the kept distribution
against fixed N on a simulated judge.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selftaught.chat import Messages, Sample
from selftaught.method.parsing import Verdict, parse_verdict
from selftaught.method.prompts import judge_messages
from selftaught.method.sampling import NOTHING, Evidence, Schedule, Track
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


@dataclass
class ItemState:
    """What has been sampled for one item so far."""

    item: JudgeItem
    #: the previous iteration's samples and correct ones for the same pair and order
    history: Evidence = NOTHING
    samples: int = 0
    #: correct samples in the round that found one (0 while none has)
    correct: int = 0
    tokens: int = 0
    unparsed: int = 0
    truncated: int = 0
    kept: dict[str, Any] | None = None

    @property
    def track(self) -> Track:
        return Track(self.history, Evidence(self.samples, self.correct))

    def tally(self) -> dict[str, Any]:
        """What the next iteration reads about this item (its line of `judged.jsonl`)."""
        return {"id": self.item.example_id, "order": self.item.order, "samples": self.samples, "correct": self.correct}


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
    state.correct = len(correct)
    state.kept = {
        **state.tally(),
        "winner": item.expected,
        "messages": item.messages(),
        "judgment": pick.text.strip(),
    }
    return state.kept


#: Draws one round: the items, how many samples each, one seed each -> their samples, in order.
Draw = Callable[[Sequence[ItemState], Sequence[int], Sequence[int]], list[list[Sample]]]


def sample_in_rounds(states: Sequence[ItemState], schedule: Schedule, draw: Draw, seed_of: Callable[[ItemState, int], int]) -> Iterator[ItemState]:
    """Run the rounds of `schedule` over `states`; yield each item as it finds its kept judgment.
    `seed_of(item, round)` seeds the item's request and its choice among the correct samples, so
    a resumed shard draws and keeps what the interrupted one did."""
    pending = list(states)
    for number in range(schedule.rounds):
        if not pending:
            return
        sizes = schedule.sizes(number, [s.track for s in pending], [s.track for s in states])
        seeds = [seed_of(state, number) for state in pending]
        results = draw(pending, sizes, seeds)
        still_pending = []
        for state, seed, samples in zip(pending, seeds, results, strict=True):
            if choose_correct(state, samples, random.Random(seed)) is None:
                still_pending.append(state)
            else:
                yield state
        pending = still_pending


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
