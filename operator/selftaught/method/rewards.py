"""GRPO's training prompts and the rewards of the judgments sampled for them (`train.method: grpo`).

The label of every pair is known by construction, so a judgment's reward needs no other model:
J1 (Whitehouse et al. 2025) rewards a verdict that names the chosen answer and, as an option, a
pair judged right in both orders (position consistency). The prompts are exactly the judge
stage's (`method/judging.py`, `method/prompts.py`) and the verdicts are read by the same parsers.

Some rewards need a partner: the same pair in the other order (consistency) or, for a pointwise
judge, the rating of the other answer (a rating is right only against the other one). Partners
are adjacent rows, so a batch of whole groups of adjacent rows holds both (the engine sizes its
generation batches for that); the k-th judgment of a row is paired with the k-th of its partner,
as the judge stage pairs the k-th ratings of the two answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from selftaught.method.judging import JudgeItem, RatingItem, judge_items
from selftaught.method.parsing import parse_rating, parse_verdict
from selftaught.method.selection import priority

#: the reward terms, in the order their weights are given to the trainer
TERMS = ("correct", "format", "consistency")
#: a pointwise row rates one answer of the pair
CHOSEN, REJECTED = "chosen", "rejected"
PARTNER = {"AB": "BA", "BA": "AB", CHOSEN: REJECTED, REJECTED: CHOSEN}


def grpo_prompts(pairs: Iterable[dict[str, Any]], *, format: str, orders: str, seed: int, iteration: int) -> list[dict[str, Any]]:
    """The training rows: each pair's judge prompts (`prompt`, chat messages) with its id (`group`)
    and what the row is (`role`: the order AB/BA, or the answer rated). Pairs come in a seeded order
    that differs per iteration; a pair's rows stay adjacent (both orders, or both answers rated)."""
    shuffled = sorted(pairs, key=lambda pair: priority(seed, f"grpo:{iteration}:{pair['id']}"))
    rows = []
    for pair in shuffled:
        for item in judge_items(pair, orders, seed, format):
            if isinstance(item, JudgeItem):
                rows.append({"prompt": item.messages(), "group": pair["id"], "role": item.order})
            elif isinstance(item, RatingItem):
                chosen, rejected = item.conversations()
                rows.append({"prompt": chosen, "group": pair["id"], "role": CHOSEN})
                rows.append({"prompt": rejected, "group": pair["id"], "role": REJECTED})
    return rows


def rows_per_pair(format: str, orders: str) -> int:
    """How many adjacent rows one pair gives (what a generation batch must hold whole)."""
    return 2 if format == "pointwise" or orders == "both" else 1


@dataclass(frozen=True)
class Scored:
    """One sampled judgment, read."""

    readable: bool
    correct: bool
    #: correct, and so is its partner's judgment of the same number (pointwise: correct)
    consistent: bool


def _numbered(groups: Sequence[str], roles: Sequence[str]) -> list[tuple[str, str, int]]:
    """Each judgment's (group, role, k): the k-th judgment of that row in the batch."""
    seen: Counter[tuple[str, str]] = Counter()
    keys = []
    for group, role in zip(groups, roles, strict=True):
        keys.append((group, role, seen[(group, role)]))
        seen[(group, role)] += 1
    return keys


def score(groups: Sequence[str], roles: Sequence[str], texts: Sequence[str]) -> list[Scored]:
    """Read a batch of judgments (row `group` and `role`, the judgment's text). A judgment whose
    partner is not in the batch is scored on its own: pairwise, correct but never consistent;
    pointwise, never correct (a rating is right only against the other answer's)."""
    keys = _numbered(groups, roles)
    pairwise = [role in ("AB", "BA") for role in roles]
    reading: dict[tuple[str, str, int], Any] = {}
    for key, text, is_pairwise in zip(keys, texts, pairwise, strict=True):
        reading[key] = parse_verdict(text) if is_pairwise else parse_rating(text)

    def right(key: tuple[str, str, int]) -> bool:
        group, role, k = key
        value = reading.get(key)
        if role in ("AB", "BA"):
            return value == ("A" if role == "AB" else "B")
        other = reading.get((group, PARTNER[role], k))
        if value is None or other is None:
            return False
        return value > other if role == CHOSEN else other > value

    scored = []
    for key, is_pairwise in zip(keys, pairwise, strict=True):
        correct = right(key)
        partner = (key[0], PARTNER[key[1]], key[2])
        consistent = correct and (partner in reading and right(partner) if is_pairwise else True)
        scored.append(Scored(readable=reading[key] is not None, correct=correct, consistent=consistent))
    return scored


def rewards(groups: Sequence[str], roles: Sequence[str], texts: Sequence[str]) -> dict[str, list[float]]:
    """Each term of `TERMS` per judgment, 0 or 1 (the trainer weighs and sums them)."""
    scored = score(groups, roles, texts)
    return {
        "correct": [float(s.correct) for s in scored],
        "format": [float(s.readable) for s in scored],
        "consistency": [float(s.consistent) for s in scored],
    }
