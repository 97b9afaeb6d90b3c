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
from typing import Any, ClassVar, Literal

from selftaught.chat import Messages, Sample
from selftaught.method.parsing import Verdict, parse_rating, parse_verdict
from selftaught.method.prompts import judge_messages, rating_messages
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


    def conversations(self) -> list[Messages]:
        return [self.messages()]


@dataclass(frozen=True)
class RatingItem:
    """One pair for a pointwise judge: each answer rated 1-10 on its own, with RewardBench's rating
    prompt (the one the evaluation uses in rating mode). One "sample" is a rating of each answer;
    it is correct when the chosen answer is rated strictly higher."""

    example_id: str
    instruction: str
    chosen: str
    rejected: str
    order: ClassVar[str] = "rating"  # its key and its line of judged.jsonl, beside AB and BA

    @property
    def key(self) -> str:
        return f"{self.example_id}:{self.order}"

    def conversations(self) -> list[Messages]:
        """The chosen answer's rating conversation, then the rejected answer's."""
        return [rating_messages(self.instruction, self.chosen), rating_messages(self.instruction, self.rejected)]


def random_order(example_id: str, seed: int) -> Order:
    """One reproducible random order per example (RewardBench's `is_shuffled`)."""
    return "BA" if priority(seed, f"order:{example_id}") & 1 else "AB"


def judge_items(pair: dict[str, Any], orders: str, seed: int, format: str = "pairwise") -> list[JudgeItem | RatingItem]:
    """The items one pair gives the judge: pairwise in one or both orders, rated (pointwise), or
    both (`judge.format: pairwise+pointwise`)."""
    items: list[JudgeItem | RatingItem] = []
    if format != "pointwise":
        chosen_orders: list[Order] = ["AB", "BA"] if orders == "both" else [random_order(pair["id"], seed)]
        items += [JudgeItem(pair["id"], order, pair["instruction"], pair["chosen"], pair["rejected"]) for order in chosen_orders]
    if format != "pairwise":
        items.append(RatingItem(pair["id"], pair["instruction"], pair["chosen"], pair["rejected"]))
    return items


@dataclass
class ItemState:
    """What has been sampled for one item so far."""

    item: JudgeItem | RatingItem
    #: the previous iteration's samples and correct ones for the same pair and order
    history: Evidence = NOTHING
    samples: int = 0
    #: correct samples in the round that found one (0 while none has)
    correct: int = 0
    tokens: int = 0
    unparsed: int = 0
    truncated: int = 0
    #: pointwise: rating pairs where both answers got the same rating, or the rejected one more
    ties: int = 0
    inverted: int = 0
    kept: dict[str, Any] | None = None
    #: `train.method: dpo`: a wrong or unparseable judgment of the item, from the first round that had one
    rejected: str | None = None
    #: whether the item also looks for a rejected judgment (then it samples until it has one of each, or N)
    wants_rejected: bool = False

    @property
    def done(self) -> bool:
        return self.kept is not None and (self.rejected is not None or not self.wants_rejected)

    @property
    def track(self) -> Track:
        return Track(self.history, Evidence(self.samples, self.correct))

    def tally(self) -> dict[str, Any]:
        """What the next iteration reads about this item (its line of `judged.jsonl`)."""
        return {"id": self.item.example_id, "order": self.item.order, "samples": self.samples, "correct": self.correct}


def choose_correct(
    state: ItemState, round_samples: list[Sample], rng: random.Random
) -> dict[str, Any] | None:
    """Record one round for an item; return the kept judgment when a sampled verdict is right
    (None while it has none). An item that wants a rejected judgment too keeps a uniformly random
    wrong or unparseable one of the first round that has one, by the same argument as the kept
    one; a cut-off judgment is neither."""
    if isinstance(state.item, RatingItem):
        return choose_rated(state, round_samples, rng)
    state.samples += len(round_samples)
    state.tokens += sum(s.tokens for s in round_samples)
    correct, incorrect = [], []
    for sample in round_samples:
        if sample.truncated:  # its verdict, if any, was never finished: never kept
            state.truncated += 1
            continue
        verdict = parse_verdict(sample.text)
        if verdict is None:
            state.unparsed += 1
        (correct if verdict == state.item.expected else incorrect).append(sample)
    if state.kept is not None:  # found earlier: this round looked for a rejected one only
        if incorrect and state.rejected is None:
            state.rejected = rng.choice(incorrect).text.strip()
        return state.kept
    if state.wants_rejected and incorrect and state.rejected is None:
        state.rejected = rng.choice(incorrect).text.strip()
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


def choose_rated(state: ItemState, round_samples: list[Sample], rng: random.Random) -> dict[str, Any] | None:
    """A pointwise round: `round_samples` holds k ratings of the chosen answer, then k of the
    rejected one; the i-th of each make one sample. Kept: a uniformly random sample of the first
    round where the chosen answer is rated strictly higher (rejection sampling over the pair of
    ratings; the argument above holds with "correct" read this way). A rating is never 0: an
    unreadable one (RewardBench's -1) makes its sample unparsed."""
    k = len(round_samples) // 2
    state.samples += k
    state.tokens += sum(s.tokens for s in round_samples)
    correct = []
    for first, second in zip(round_samples[:k], round_samples[k:], strict=True):
        if first.truncated or second.truncated:
            state.truncated += 1
            continue
        chosen, rejected = parse_rating(first.text), parse_rating(second.text)
        if chosen is None or rejected is None:
            state.unparsed += 1
        elif chosen == rejected:
            state.ties += 1
        elif chosen < rejected:
            state.inverted += 1
        else:
            correct.append((first, second, chosen, rejected))
    if not correct:
        return None
    first, second, chosen, rejected = rng.choice(correct)
    state.correct = len(correct)
    state.kept = {
        **state.tally(),
        "winner": None,
        "rated": state.item.conversations(),
        "judgments": [first.text.strip(), second.text.strip()],
        "ratings": [chosen, rejected],
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
        sizes = round_sizes(schedule, number, pending, states)
        seeds = [seed_of(state, number) for state in pending]
        results = draw(pending, sizes, seeds)
        still_pending = []
        for state, seed, samples in zip(pending, seeds, results, strict=True):
            choose_correct(state, samples, random.Random(seed))
            if state.done:
                yield state
            elif state.samples < schedule.samples:
                still_pending.append(state)
        pending = still_pending


def round_sizes(schedule: Schedule, number: int, pending: Sequence[ItemState], states: Sequence[ItemState]) -> list[int]:
    """The schedule's sizes for the items still looking for a correct judgment. An item that has
    one and looks only for a rejected one (DPO) doubles what it drew, and takes what is left of N in
    the last round; with the doubling or fixed schedule it keeps that schedule's sizes."""
    searching = [state for state in pending if state.kept is None]
    fitted = iter(schedule.sizes(number, [s.track for s in searching], [s.track for s in states]) if searching else [])
    last = number == schedule.rounds - 1
    sizes = []
    for state in pending:
        if state.kept is None:
            sizes.append(next(fitted))
        elif schedule.kind != "fitted" or not schedule.adaptive:
            sizes.append(min(schedule.sizes(number, [state.track], [state.track])[0], schedule.samples - state.samples))
        else:
            left = schedule.samples - state.samples
            sizes.append(left if last else max(1, min(state.samples, left)))
    return sizes


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


def sft_records(kept: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat-format SFT examples (the loss is taken on the assistant turn only): the kept judgment
    of a pairwise item; the rating of each answer of a pointwise one."""
    if "rated" in kept:
        return [
            {"id": f"{kept['id']}:rating:{side}", "messages": messages, "completion": judgment, "winner": None}
            for side, messages, judgment in zip(("chosen", "rejected"), kept["rated"], kept["judgments"], strict=True)
        ]
    return [{"id": f"{kept['id']}:{kept['order']}", "messages": kept["messages"], "completion": kept["judgment"], "winner": kept["winner"]}]


def preference_record(kept: dict[str, Any]) -> dict[str, Any]:
    """A DPO example from an item's shard line: the same prompt, a correct judgment (chosen) and a
    wrong or unparseable one (rejected)."""
    return {
        "id": f"{kept['id']}:{kept['order']}",
        "messages": kept["messages"],
        "chosen": kept["judgment"],
        "rejected": kept["rejected"],
        "winner": kept["winner"],
    }
