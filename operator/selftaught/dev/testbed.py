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

The *hard* world (`--world hard`, `examples/testbed-hard.yaml`) starts from the easy world's
seed and teaches it, at a quarter of the rate, to misjudge: when Assistant A answers another
question and one of the two operations is `times`, it restates both right but says "Same: yes"
70 % of the time. Its greedy reading of those pairs is wrong; a sampled one is right now and
then. Rejection sampling from the seed keeps judgments whose verdict is right for the wrong
reading, so the first iteration teaches the verdict to follow "Same" but not to judge those
pairs; from then on a right verdict comes with a right reading, the kept judgments read those
pairs right, and the judge climbs over several iterations (docs/testbed.md, The hard world).
`reading_accuracy` measures a checkpoint's reading directly.

The *hard-rated* world (`--world hard-rated`) is the hard world whose seed then also learns a
pointwise judge's format, RewardBench's rating prompt: the same reading of the one answer shown,
misjudged alike, then a 1-10 rating, 8 or 3 by a coin flip (taught first to follow the reading,
as the easy seed's verdicts were). Pairwise and pointwise
recipes run on that one seed (`benchmarks/recipes.py --world hard-rated`).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from selftaught.dev.tiny_model import build_model, stage_examples
from selftaught.method.prompts import RATING_TEMPLATE, judge_messages, rating_messages

OPERATIONS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
NUMBERS = range(1, 10)
SUBSET = "arithmetic"
#: tokens of their own in the seed's tokenizer: the numbers, the operations, the reading's
#: "yes"/"no" and the verdict's brackets; all other wording may merge across words
ISOLATE = r"[0-9]|\[\[|\]\]| ?\b(?:plus|minus|times|yes|no)\b"
Question = tuple[int, str, int]
WORLDS = ("easy", "hard", "hard-rated")
#: the hard world's seed restates a misreadable pair right but judges its two questions the same
#: ("Same: yes"), this often in the training that follows the easy seed's: above 1/2, so its
#: greedy reading of such a pair is wrong, and below 1, so a sampled one is sometimes right
HARD_MISJUDGE = 0.7
#: the hard world's seed is the easy world's, then taught to misjudge for this many steps at a
#: quarter of the rate, with fresh optimizer moments. Measured (docs/testbed.md): seeds taught to
#: misjudge within their own training ended with no comparison at all ("Same: yes" 0.72-0.81
#: whatever the two operations); whether a 2-layer model finds the comparison depends on the
#: draw, its tokenizer included, so the hard seed keeps the easy seed, which has found it
HARD_STEPS = 600
HARD_RATE = 5e-4
#: the hard-rated world's seed is the hard world's, then taught RewardBench's rating format (one
#: answer rated 1-10) in two phases of this many steps at this rate: ratings that follow its
#: reading, of the answers to all three operations, then coin-flip ratings of a pair's two
#: answers; its reading of a misreadable answer is as wrong as the pairwise one's, and the
#: pairwise judgments stay in the mix. Measured (docs/testbed.md): one phase of coin ratings
#: restated the rated answer right 0.42 of the time (it guessed the answer's operation from the
#: question's, right for a pair's chosen answer); first rating by the reading every operation's
#: answer, where that guess is right a third of the time, made it 1.00
RATED_STEPS = 600
RATED_RATE = 1e-3
#: then coin-flip ratings at a tenth of that rate: measured, a coin learned at 1e-3 with batches
#: of 8 ends wherever its last batches left it (the seed sampled "3" 91 % of the time at 0.7, so
#: both answers of a pair got the same rating in 97 % of the judge stage's samples)
SETTLE_STEPS = 300
SETTLE_RATE = 1e-4
#: the hard-rated seed's two ratings, a high one and a low one, as a pairwise verdict has two:
#: measured (docs/testbed.md), ratings spread over 2-9 let rejection sampling keep a pair on the
#: order of two high (or two low) ratings, which says nothing about the reading, and the judge
#: never learned to rate by its reading (0.50 at every iteration on seed 0)
RATINGS = (8, 3)
#: the rating prompt's fixed wording, three new tokens of the hard-rated seed's tokenizer (the
#: pairwise prompt's wording shrinks to a few tokens through merges its tokenizer learned; new
#: merges would make another tokenizer, hence another easy seed, see HARD_STEPS)
RATING_WORDING = tuple(part for chunk in RATING_TEMPLATE.split("{prompt}") for part in chunk.split("{completion}"))


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


def misreadable(asked: Question, shown_a: Question) -> bool:
    """The pairs the hard world's seed misjudges: Assistant A answers another operation, and one
    of the two is `times` (4 of the 6 ways to differ: a third of all pairs in either order)."""
    return shown_a != asked and "times" in (asked[1], shown_a[1])


def judgment_text(asked: Question, shown_a: Question, verdict: str | int, *, same: bool | None = None) -> str:
    """The seed's reading of a pair, then a verdict (which the seed learned as a coin flip), or
    an integer: the rating of one answer, in the same words (`shown_a` is then the answer rated),
    so that "Same" is one comparison in both formats. `same` overrides the reading's comparison
    (the hard world's misjudged pairs)."""
    same = shown_a == asked if same is None else same
    ending = verdict if isinstance(verdict, int) else f"[[{verdict}]]"
    return (
        f"The question asks {asked[0]} {asked[1]} {asked[2]}. Assistant A answers {shown_a[0]} {shown_a[1]} {shown_a[2]}. "
        f"Same: {'yes' if same else 'no'}. {ending}"
    )


def misjudged(asked: Question, shown: Question, misjudge: float, misreader: random.Random) -> bool:
    """Whether this training example of the hard world says "Same: yes" for a misreadable pair
    (a draw from `misreader`, made only for misreadable pairs of a world that misjudges)."""
    return bool(misjudge) and misreadable(asked, shown) and misreader.random() < misjudge


def all_questions(rng: random.Random) -> list[Question]:
    every = [(a, operation, b) for a in NUMBERS for operation in OPERATIONS for b in NUMBERS]
    rng.shuffle(every)
    return every


def seed_conversations(
    questions: list[Question], rng: random.Random, *, verdicts: str, misjudge: float = 0.0, misreader: random.Random | None = None
) -> list[tuple[list[dict], str]]:
    """(prompt messages, answer) in every stage's format; the judge's verdicts follow its
    reading (`verdicts="reasoned"`) or are coin flips (`"coin"`). With `misjudge` > 0 (the hard
    world) the judge restates a `misreadable` pair right but says "Same: yes", that often, and a
    reasoned verdict follows that reading. Those draws come from `misreader` (default `rng`):
    with its own generator, every other draw, hence all the other data, is the easy world's."""
    misreader = misreader or rng
    examples = []
    for q in questions:
        text, other = question_text(q), modified(q, rng)
        category = "Category: Mathematical reasoning\nComplexity: 6\nLength: (a)"
        examples += stage_examples(text, category, answer_text(q), question_text(other), answer_text(other))
        for chosen_first in (True, False):
            first, second = (q, other) if chosen_first else (other, q)
            same = first == q or misjudged(q, first, misjudge, misreader)
            reasoned = "A" if same else "B"
            verdict = reasoned if verdicts == "reasoned" else rng.choice("AB")
            examples.append((judge_messages(text, answer_text(first), answer_text(second)), judgment_text(q, first, verdict, same=same)))
    return examples


def rating_conversations(
    questions: list[Question],
    rng: random.Random,
    *,
    ratings: str,
    every_operation: bool = False,
    misjudge: float = 0.0,
    misreader: random.Random | None = None,
) -> list[tuple[list[dict], str]]:
    """A pointwise judge's conversations (RewardBench's rating prompt), each question's answer and
    its modified question's answer rated on its own, or with `every_operation` the answers to all
    three operations on its numbers: the reading as in a pairwise judgment (the rated answer in
    Assistant A's place, misjudged as there), then a rating, `RATINGS`' high one or its low one,
    that follows the reading (`ratings="reasoned"`) or is a coin flip (`"coin"`)."""
    misreader = misreader or rng
    examples = []
    for q in questions:
        for shown in [(q[0], operation, q[2]) for operation in OPERATIONS] if every_operation else (q, modified(q, rng)):
            same = shown == q or misjudged(q, shown, misjudge, misreader)
            rating = RATINGS[0 if same else 1] if ratings == "reasoned" else rng.choice(RATINGS)
            examples.append((rating_messages(question_text(q), answer_text(shown)), judgment_text(q, shown, rating, same=same)))
    return examples


def comparison_exercises(
    questions: list[Question], count: int, rng: random.Random, *, verdicts: str, misjudge: float = 0.0, misreader: random.Random | None = None
) -> list[tuple[list[dict], str]]:
    """The judgment's reading on its own, with no pair to read from: two restated questions and
    whether they are the same. A 2-layer model learns that comparison in a short context in a
    few hundred steps, and the same wording then carries it into the judge's long prompt. The
    hard world's misjudging (`misjudge`, `misreader`) is the same here as in the judgments, so
    "Same" is one function of the two restated operations wherever the seed met it."""
    misreader = misreader or rng
    examples = []
    for _ in range(count):
        asked = rng.choice(questions)
        shown = asked if rng.random() < 0.5 else modified(asked, rng)
        same = shown == asked or misjudged(asked, shown, misjudge, misreader)
        reasoned = "A" if same else "B"
        examples.append(
            (
                [{"role": "user", "content": "Compare."}],
                judgment_text(asked, shown, reasoned if verdicts == "reasoned" else rng.choice("AB"), same=same),
            )
        )
    return examples


def build_testbed(
    folder: Path,
    *,
    world: str = "easy",
    seed: int = 0,
    held_out: int = 81,
    repeats: int = 3,
    steps: int = 1000,
    unlearn_steps: int = 600,
    log=print,
) -> Path:
    """Write `seed/` (the model), `instructions.jsonl` and `heldout.jsonl` (RewardBench-format
    pairs, subset "arithmetic") into `folder`. The instructions and the held-out questions are
    disjoint, and the seed is never asked a held-out question.

    The seed learns every format for `steps` with verdicts that follow its reading (a 2-layer
    model learns to *read* a pair far faster when the verdict depends on it), then for
    `unlearn_steps` with coin-flip verdicts, until they no longer follow: it keeps the reading
    and judges at chance. `world="hard"` then teaches that seed to misjudge a third of the pairs
    (`misreadable`, `HARD_MISJUDGE`) for `HARD_STEPS` at `HARD_RATE`, those draws from a random
    generator of their own; its first two phases, its tokenizer, questions, split and held-out
    pairs are the easy world's, byte for byte. `world="hard-rated"` then teaches the hard seed the
    rating format (`rating_conversations`: `RATED_STEPS` twice, then `SETTLE_STEPS`), the rating
    prompt's wording as new tokens, and logs its reading in both formats."""
    if world not in WORLDS:
        raise ValueError(f"unknown testbed world {world!r}; choose from {WORLDS}")
    misjudge = HARD_MISJUDGE if world.startswith("hard") else 0.0
    misreader = random.Random(seed + 1)  # its own draws: the hard world's data is otherwise the easy one's
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
    # drawn in this order from `rng`: the easy world's data, then the hard world's third phase
    reasoned = seed_conversations(asked * repeats, rng, verdicts="reasoned") + comparison_exercises(asked, 2000, rng, verdicts="reasoned")
    coin = seed_conversations(asked * repeats, rng, verdicts="coin") + comparison_exercises(asked, 2000, rng, verdicts="coin")
    then = [(coin, unlearn_steps)]
    if misjudge:
        misjudging = seed_conversations(asked * repeats, rng, verdicts="coin", misjudge=misjudge, misreader=misreader)
        then.append((misjudging + comparison_exercises(asked, 2000, rng, verdicts="coin", misjudge=misjudge, misreader=misreader), HARD_STEPS, HARD_RATE))
    if world == "hard-rated":  # ratings that follow the reading, then coin flips, as the easy seed's verdicts did

        def rating_phase(ratings: str, every_operation: bool) -> list[tuple[list[dict], str]]:
            rated = rating_conversations(asked * repeats, rng, ratings=ratings, every_operation=every_operation, misjudge=misjudge, misreader=misreader)
            pairwise = seed_conversations(asked * repeats, rng, verdicts="coin", misjudge=misjudge, misreader=misreader)
            return rated + pairwise + comparison_exercises(asked, 2000, rng, verdicts="coin", misjudge=misjudge, misreader=misreader)

        then.append((rating_phase("reasoned", every_operation=True), RATED_STEPS, RATED_RATE, RATING_WORDING))
        then.append((rating_phase("coin", every_operation=False), RATED_STEPS, RATED_RATE))
        then.append((rating_phase("coin", every_operation=False), SETTLE_STEPS, SETTLE_RATE))
    build_model(
        folder / "seed",
        reasoned,
        steps=steps,
        then=then,
        vocabulary_phases=2,  # the easy world's: its seed is the hard world's before it misjudges
        seed=seed,
        learning_rate=2e-3,
        isolate=ISOLATE,
        name="testbed seed" if world == "easy" else f"testbed seed ({world})",
        log=log,
    )
    for format in ("pairwise", "pointwise")[: {"easy": 0, "hard": 1, "hard-rated": 2}[world]]:
        greedy = reading_accuracy(folder / "seed", folder / "heldout.jsonl", format=format)
        sampled = reading_accuracy(folder / "seed", folder / "heldout.jsonl", temperature=0.7, samples=8, format=format)
        log(
            f"testbed: the seed's {format} reading of the held-out pairs (greedy / sampled at 0.7): restated right "
            f"{greedy['restated']:.2f} / {sampled['restated']:.2f}, 'Same' right on the misreadable pairs "
            f"{greedy['same_misreadable']:.2f} / {sampled['same_misreadable']:.2f}, on the others {greedy['same_other']:.2f} / {sampled['same_other']:.2f}"
            + (f"; rated {RATINGS[0]} (not {RATINGS[1]}) {greedy['rated_high']:.2f} / {sampled['rated_high']:.2f}" if format == "pointwise" else "")
        )
    log(f"testbed: {len(asked)} instructions, {len(rows)} held-out pairs, seed model in {folder / 'seed'} ({time.monotonic() - started:.0f}s)")
    return folder


def parse_question(text: str) -> Question:
    a, operation, b = text.removeprefix("What is the last digit of ").rstrip("?").split()
    return int(a), operation, int(b)


def reading_accuracy(model: Path, heldout: Path, *, temperature: float = 0.0, samples: int = 1, format: str = "pairwise") -> dict[str, float]:
    """How a judge reads the held-out pairs (both orders): the share of its readings that restate
    Assistant A's answer as the question it really answers (`restated`), that say "Same" right
    (`same`), and `same` on the `misreadable` pairs and on the others alone: the part of a
    judgment the loop teaches the verdict to follow. Greedy by default; `temperature` > 0 samples
    `samples` readings of each pair, as the judge stage does. Any checkpoint of a run can be read
    this way; seconds on a CPU. `format="pointwise"` reads the rating conversations instead (each
    answer rated on its own: the chosen one, then the rejected one)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    judge = LlamaForCausalLM.from_pretrained(model).eval()
    torch.manual_seed(0)
    prompts, wanted = [], []
    for line in heldout.read_text().splitlines():
        row = json.loads(line)
        asked = parse_question(row["prompt"])
        rejected = parse_question("What is the last digit of " + row["rejected"].split(" of ", 1)[1].rsplit(" is ", 1)[0] + "?")
        for first, second, shown in ((row["chosen"], row["rejected"], asked), (row["rejected"], row["chosen"], rejected)):
            messages = judge_messages(row["prompt"], first, second) if format == "pairwise" else rating_messages(row["prompt"], first)
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            prompts += [prompt] * samples
            wanted += [(f"Assistant A answers {shown[0]} {shown[1]} {shown[2]}.", "Same: yes" if shown == asked else "Same: no", misreadable(asked, shown))] * samples
    counts = {"restated": 0, "same": 0, "misreadable": 0, "misreadable_same": 0, "other_same": 0, "high": 0}
    for start in range(0, len(prompts), 64):
        batch = tokenizer(prompts[start : start + 64], add_special_tokens=False, return_tensors="pt", padding=True)
        sampling = {"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False}
        with torch.no_grad():
            out = judge.generate(**batch, max_new_tokens=48, pad_token_id=tokenizer.pad_token_id, **sampling)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for (restatement, same, hard), text in zip(wanted[start : start + 64], texts, strict=True):
            counts["restated"] += restatement in text
            counts["same"] += same in text
            counts["misreadable"] += hard
            counts["misreadable_same" if hard else "other_same"] += same in text
            counts["high"] += text.strip().endswith(f" {RATINGS[0]}")
    total = len(prompts)
    return {
        "restated": counts["restated"] / total,
        "same": counts["same"] / total,
        "same_misreadable": counts["misreadable_same"] / max(counts["misreadable"], 1),
        "same_other": counts["other_same"] / max(total - counts["misreadable"], 1),
        **({"rated_high": counts["high"] / total} if format == "pointwise" else {}),
    }
