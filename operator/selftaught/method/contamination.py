"""Whether the instructions a run trains on hold its evaluation set's prompts: a judge trained on
the very prompts it is scored on reports a number that means nothing.

Two texts match when

- **exact**: they are the same after `selection.normalise` (case, accents, punctuation and spacing
  do not make a prompt new: the rule select's de-duplication uses), or
- **near**: their word 3-grams (after the same normalising) overlap with a Jaccard similarity of
  at least `NEAR_JACCARD` — a prompt with a word or two changed, added or dropped — or the
  instruction holds at least `CONTAINED` of the evaluation prompt's 3-grams (the prompt inside a
  longer instruction). Near matching needs `MIN_SHINGLES` 3-grams on the evaluation prompt's side
  (about ten words): two short prompts that share a template ("write a poem about cats" and
  "... about dogs") are different prompts, and only an exact match counts for them.

Matching is exact, not sketched: an inverted index from each 3-gram to the evaluation prompts that
hold it proposes candidates, and the similarity is computed on the two sets. A 3-gram that more
than `COMMON` evaluation prompts share (a benchmark's template) proposes none, and an instruction
is compared with its `CANDIDATES` best candidates, so the work per instruction stays bounded
whatever the evaluation set; a near duplicate shares its rarest 3-grams with its source and is
among them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from selftaught.method.selection import normalise

#: words per shingle
SHINGLE = 3
#: Jaccard similarity of the two texts' 3-gram sets from which they are near duplicates
NEAR_JACCARD = 0.6
#: share of the evaluation prompt's 3-grams found in the instruction from which it is contained
CONTAINED = 0.8
#: the fewest 3-grams (about ten words) an evaluation prompt needs to be matched other than exactly
MIN_SHINGLES = 8
#: a 3-gram held by more evaluation prompts than this is boilerplate: it proposes no candidate
COMMON = 20
#: candidates compared per instruction: those sharing the most of its rarer 3-grams
CANDIDATES = 5

Kind = Literal["exact", "near"]


@dataclass(frozen=True)
class Match:
    """An instruction that matches evaluation prompt number `prompt`, how, and how closely (1.0 for
    an exact match; else the larger of the Jaccard similarity and the containment)."""

    kind: Kind
    prompt: int
    similarity: float


def shingles(normalised: str) -> frozenset[tuple[str, ...]]:
    """The word 3-grams of a `normalise`d text."""
    words = normalised.split()
    return frozenset(zip(*(words[i:] for i in range(SHINGLE)), strict=False))


class EvaluationPrompts:
    """An evaluation set's prompts, indexed to be matched against instructions one at a time."""

    def __init__(self, prompts: Iterable[str]):
        self.exact: dict[str, int] = {}
        self.sets: list[frozenset[tuple[str, ...]]] = []
        postings: dict[tuple[str, ...], list[int]] = {}
        for number, prompt in enumerate(prompts):
            normalised = normalise(prompt)
            if normalised:
                self.exact.setdefault(normalised, number)
            grams = shingles(normalised)
            self.sets.append(grams)
            if len(grams) >= MIN_SHINGLES:
                for gram in grams:
                    postings.setdefault(gram, []).append(number)
        self.postings = {gram: numbers for gram, numbers in postings.items() if len(numbers) <= COMMON}
        self.indexed = frozenset(self.postings)

    def __len__(self) -> int:
        return len(self.sets)

    def match(self, instruction: str) -> Match | None:
        """How `instruction` matches the evaluation set, or None when it does not."""
        normalised = normalise(instruction)
        exact = self.exact.get(normalised) if normalised else None  # an empty text matches nothing
        if exact is not None:
            return Match("exact", exact, 1.0)
        grams = shingles(normalised)
        shared = Counter(number for gram in grams & self.indexed for number in self.postings[gram])
        best: Match | None = None
        for number, _ in shared.most_common(CANDIDATES):
            prompt = self.sets[number]
            common = len(grams & prompt)
            jaccard = common / (len(grams) + len(prompt) - common)
            contained = common / len(prompt)
            if jaccard >= NEAR_JACCARD or contained >= CONTAINED:
                similarity = max(jaccard, contained)
                if best is None or similarity > best.similarity:
                    best = Match("near", number, similarity)
        return best


@dataclass
class Tally:
    """What a pass over the instructions found: how many of each kind, and the first few."""

    checked: int = 0
    exact: int = 0
    near: int = 0
    examples: list[str] | None = None

    @property
    def matched(self) -> int:
        return self.exact + self.near

    def add(self, match: Match | None, where: str, keep: int = 5) -> None:
        self.checked += 1
        if match is None:
            return
        if match.kind == "exact":
            self.exact += 1
        else:
            self.near += 1
        if self.examples is None:
            self.examples = []
        if len(self.examples) < keep:
            self.examples.append(f"{where}: {match.kind} match of evaluation prompt {match.prompt} ({match.similarity:.2f})")

    def describe(self, policy: str) -> str:
        """One line for the plan, a stage's log and the report."""
        if not self.matched:
            return f"contamination: none of {self.checked:,} instructions matches the evaluation set"
        done = {"drop": "dropped from training by select", "warn": "kept (data.decontaminate: warn)"}.get(policy, "")
        return (
            f"contamination: {self.matched:,} of {self.checked:,} instructions match the evaluation set "
            f"({self.exact:,} exact, {self.near:,} near): {done}"
        )
