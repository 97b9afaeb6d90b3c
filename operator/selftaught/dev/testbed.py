"""A small world where the judge must really learn, on CPU: does the Self-Taught loop make a judge
better at a task it cannot do at the start?

The family is arithmetic questions ("What is the last digit of 2 times 9?"). The seed answers in
one fixed style ("The last digit of 2 times 9 is 8."), and, asked for a similar-but-different
question, keeps the numbers, changes the operation and answers *that* ("The last digit of 2 plus
9 is 1.") in the very same words: the two answers of a
pair differ only in whether they answer the question asked. No style gives the better one away.

The seed has learned every stage's format. As a judge it reads the pair the way a careful judge
would: it restates the question and Assistant A's answer and notes whether they are the same
question. But its verdicts were taught as coin flips, so they do not follow from its own reading,
and it judges this family at chance. What the loop has to teach is that the verdict follows from
the reading, from nothing but the judgments it keeps because their verdict is right by
construction: no human label is used anywhere. The held-out pairs are built the same way from
questions that are never an instruction, and that the seed was never asked to answer, modify or
judge (one can appear only as the modified question the seed wrote for a training question: the
same numbers, another operation — as the method's own pairs do).

`selftaught dev testbed DIR` writes the seed model, the instructions and the held-out pairs;
`examples/testbed.yaml` runs the loop on them; `benchmarks/recipes.py` compares recipes on it.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from selftaught.dev.tiny_model import build_model, stage_examples
from selftaught.method.prompts import (
    judge_messages,
)

OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
NUMBERS = range(1, 10)
SUBSET = "arithmetic"
#: tokens of their own in the seed's tokenizer: the numbers, the operations, the reading's
#: "yes"/"no" and the verdict's brackets; all other wording may merge across words
ISOLATE = r"[0-9]|\[\[|\]\]| ?\b(?:plus|minus|times|yes|no)\b"
Question = tuple[int, str, int]


def question_text(q: Question) -> str:
    return f"What is the last digit of {q[0]} {q[1]} {q[2]}?"


def answer_text(q: Question) -> str:
    """Always one digit: every answer has the same length, so a 2-layer model finds what to copy
    at a fixed distance."""
    return f"The last digit of {q[0]} {q[1]} {q[2]} is {OPERATIONS[q[1]](q[0], q[2]) % 10}."


def modified(q: Question, rng: random.Random) -> Question:
    """The similar-but-different question: the same numbers, another operation."""
    a, operation, b = q
    return a, rng.choice([other for other in OPERATIONS if other != operation]), b


def judgment_text(asked: Question, shown_a: Question, verdict: str) -> str:
    """The seed's reading of a pair, then a verdict (which the seed learned as a coin flip)."""
    same = "yes" if shown_a == asked else "no"
    return (
        f"The question asks {asked[0]} {asked[1]} {asked[2]}. Assistant A answers {shown_a[0]} {shown_a[1]} {shown_a[2]}. Same: {same}. [[{verdict}]]"
    )


def all_questions(rng: random.Random) -> list[Question]:
    every = [(a, operation, b) for a in NUMBERS for operation in OPERATIONS for b in NUMBERS]
    rng.shuffle(every)
    return every


def seed_conversations(questions: list[Question], rng: random.Random, *, verdicts: str) -> list[tuple[list[dict], str]]:
    """(prompt messages, answer) in every stage's format; the judge's verdicts follow its
    reading (`verdicts="reasoned"`) or are coin flips (`"coin"`)."""
    examples = []
    for q in questions:
        text, other = question_text(q), modified(q, rng)
        category = "Category: Mathematical reasoning\nComplexity: 6\nLength: (a)"
        examples += stage_examples(text, category, answer_text(q), question_text(other), answer_text(other))
        for chosen_first in (True, False):
            first, second = (q, other) if chosen_first else (other, q)
            reasoned = "A" if chosen_first else "B"
            verdict = reasoned if verdicts == "reasoned" else rng.choice("AB")
            examples.append((judge_messages(text, answer_text(first), answer_text(second)), judgment_text(q, first, verdict)))
    return examples


def comparison_exercises(questions: list[Question], count: int, rng: random.Random, *, verdicts: str) -> list[tuple[list[dict], str]]:
    """The judgment's reading on its own, with no pair to read from: two restated questions and
    whether they are the same. A 2-layer model learns that comparison in a short context in a
    few hundred steps, and the same wording then carries it into the judge's long prompt."""
    examples = []
    for _ in range(count):
        asked = rng.choice(questions)
        shown = asked if rng.random() < 0.5 else modified(asked, rng)
        reasoned = "A" if shown == asked else "B"
        examples.append(
            ([{"role": "user", "content": "Compare."}], judgment_text(asked, shown, reasoned if verdicts == "reasoned" else rng.choice("AB")))
        )
    return examples


def build_testbed(
    folder: Path, *, seed: int = 0, held_out: int = 81, repeats: int = 3, steps: int = 1000, unlearn_steps: int = 600, log=print
) -> Path:
    """Write `seed/` (the model), `instructions.jsonl` and `heldout.jsonl` (RewardBench-format
    pairs, subset "arithmetic") into `folder`. The instructions and the held-out questions are
    disjoint, and the seed is never asked a held-out question.

    The seed learns every format for `steps` with verdicts that follow its reading (a 2-layer
    model learns to *read* a pair far faster when the verdict depends on it), then for
    `unlearn_steps` with coin-flip verdicts, until they no longer follow: it keeps the reading
    and judges at chance."""
    started = time.monotonic()
    rng = random.Random(seed)
    pool = all_questions(rng)
    held, asked = pool[:held_out], pool[held_out:]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instructions.jsonl").write_text("".join(json.dumps({"instruction": question_text(q)}) + "\n" for q in asked))
    rows = [
        {"id": f"arith-{number}", "prompt": question_text(q), "chosen": answer_text(q), "rejected": answer_text(modified(q, rng)), "subset": SUBSET}
        for number, q in enumerate(held)
    ]
    (folder / "heldout.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    build_model(
        folder / "seed",
        seed_conversations(asked * repeats, rng, verdicts="reasoned") + comparison_exercises(asked, 2000, rng, verdicts="reasoned"),
        steps=steps,
        then=[(seed_conversations(asked * repeats, rng, verdicts="coin") + comparison_exercises(asked, 2000, rng, verdicts="coin"), unlearn_steps)],
        seed=seed,
        learning_rate=2e-3,
        isolate=ISOLATE,
        name="testbed seed",
        log=log,
    )
    log(f"testbed: {len(asked)} instructions, {len(rows)} held-out pairs, seed model in {folder / 'seed'} ({time.monotonic() - started:.0f}s)")
    return folder
