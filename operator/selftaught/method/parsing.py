"""Tolerant parsers for what the model writes. They return None instead of raising: a model's
unparseable answer is data to count and report, never a crash."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from selftaught.method.categories import CATEGORIES
from selftaught.method.prompts import (
    LENGTHS,
    MODIFIED_ANSWER_END,
    MODIFIED_ANSWER_START,
    MODIFIED_QUESTION_MARKER,
)

Verdict = Literal["A", "B"]


_FILLER = {"and", "or", "a", "the"}


def _normalise_name(text: str) -> str:
    """"Knowledge & Reasoning", "knowledge and reasoning" and "**Knowledge and Reasoning**"
    are the same category."""
    words = re.sub(r"[^a-z]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _FILLER)


_CATEGORY_BY_NAME = {_normalise_name(name): name for name in CATEGORIES}
_CATEGORY_RE = re.compile(r"category\s*[:\-]\s*(.+)", re.IGNORECASE)
_COMPLEXITY_RE = re.compile(r"complexity\s*[:\-]\s*\**\s*(\d{1,2})", re.IGNORECASE)
_LENGTH_RE = re.compile(r"length\s*[:\-]\s*\**\s*\(?([a-e])\b", re.IGNORECASE)


@dataclass(frozen=True)
class Categorization:
    category: str
    complexity: int
    length: str | None


def parse_categorization(text: str) -> Categorization | None:
    """`Category: Coding / Complexity: 7 / Length: (c)`, tolerating markdown, case, and a category
    written with small differences ("knowledge & reasoning"). Length is optional."""
    category_match = _CATEGORY_RE.search(text)
    complexity_match = _COMPLEXITY_RE.search(text)
    if not category_match or not complexity_match:
        return None
    raw = _normalise_name(category_match.group(1).split("\n")[0])
    category = _CATEGORY_BY_NAME.get(raw)
    if category is None:  # e.g. "Coding (Python)" or "the Coding category"
        matches = [name for key, name in _CATEGORY_BY_NAME.items() if key in raw]
        category = max(matches, key=len) if matches else None
    complexity = int(complexity_match.group(1))
    if category is None or not 1 <= complexity <= 10:
        return None
    length_match = _LENGTH_RE.search(text)
    length = length_match.group(1).lower() if length_match else None
    return Categorization(category, complexity, length if length in LENGTHS else None)


@dataclass(frozen=True)
class ModifiedPair:
    modified_instruction: str
    response: str


def parse_modified_pair(text: str) -> ModifiedPair | None:
    """Both markers must be there and both parts non-empty; the end marker may be missing when
    generation stopped right after the answer (its content is still whole)."""
    question_at = text.find(MODIFIED_QUESTION_MARKER)
    start_at = text.find(MODIFIED_ANSWER_START)
    if question_at < 0 or start_at < 0 or start_at < question_at:
        return None
    modified = text[question_at + len(MODIFIED_QUESTION_MARKER) : start_at].strip()
    answer = text[start_at + len(MODIFIED_ANSWER_START) :]
    end_at = answer.find(MODIFIED_ANSWER_END)
    answer = (answer[:end_at] if end_at >= 0 else answer).strip()
    if not modified or not answer:
        return None
    return ModifiedPair(modified, answer)


def parse_verdict(text: str) -> Verdict | None:
    """`[[A]]` or `[[B]]`; both or neither → None (the official `parse_judgement`, without the
    tie, which this prompt does not offer)."""
    has_a, has_b = "[[A]]" in text, "[[B]]" in text
    if has_a == has_b:
        return None
    return "A" if has_a else "B"


def parse_rewardbench_verdict(text: str) -> Verdict | None:
    """RewardBench's official reading of a pairwise verdict (`rewardbench/generative.py`,
    `process_judgement`, default prompt): `[[A]]` anywhere wins, else `[[B]]` anywhere, else an
    error (None). Exact substrings: both markers → "A"; `[[a]]`, `[[ A ]]`, `[[C]]` → None.
    Leaderboard scores use this; the stricter `parse_verdict` is for training data."""
    if "[[A]]" in text:
        return "A"
    if "[[B]]" in text:
        return "B"
    return None


_RATING_RE = re.compile(r"\b([1-9]|10)\b\s*$")


def parse_rating(text: str) -> int | None:
    """RewardBench 2's official reading of an absolute rating (`rewardbench/generative_v2.py`,
    `get_single_rating`): an integer 1-10 at the very end of the stripped text, else None (the
    official -1). Quirks kept: "8/10" reads 10, "Rating: 7." reads None."""
    match = _RATING_RE.search(text.strip())
    return int(match.group(1)) if match else None
