"""The testbed's world (docs/testbed.md): pairs that differ only in the question they answer, a
held-out set the seed never saw, a reading that is right and verdicts that follow it or not."""

import json
import random
import re

import pytest

from selftaught.dev import testbed
from selftaught.method.parsing import parse_modified_pair


def test_chosen_and_rejected_differ_only_in_the_operation_they_answer():
    rng = random.Random(0)
    for q in testbed.all_questions(rng):
        other = testbed.modified(q, rng)
        assert other[0] == q[0] and other[2] == q[2] and other[1] != q[1]
        chosen, rejected = testbed.answer_text(q), testbed.answer_text(other)
        # the same words; only the operation and the one digit of the result differ
        assert chosen.replace(f" {q[1]} ", " _ ")[:-2] == rejected.replace(f" {other[1]} ", " _ ")[:-2]


def test_the_seeds_reading_is_right_and_its_verdicts_follow_it_only_when_reasoned():
    rng = random.Random(1)
    questions = testbed.all_questions(rng)[:30]
    judged = lambda verdicts: [t for m, t in testbed.seed_conversations(questions, rng, verdicts=verdicts) if t.startswith("The question asks")]  # noqa: E731
    for text in judged("reasoned"):
        assert ("Same: yes" in text) == text.endswith("[[A]]")
    coin = judged("coin")
    assert 0.2 < sum(("Same: yes" in t) == t.endswith("[[A]]") for t in coin) / len(coin) < 0.8
    modified = [t for m, t in testbed.seed_conversations(questions, rng, verdicts="coin") if t.startswith("[User Question Modified]")]
    assert all(parse_modified_pair(t) is not None for t in modified)  # the pairs stage can read them


def test_the_hard_seed_misjudges_a_third_of_the_pairs_and_only_those_it_can_misjudge():
    """The hard world: on a pair where one operation is `times` and Assistant A answers the other,
    the seed restates both questions right but mostly says "Same: yes"; everywhere else "Same" is
    right, and a reasoned verdict follows "Same". The comparison exercises misjudge alike."""
    rng = random.Random(2)
    questions = testbed.all_questions(rng)
    reading = re.compile(r"The question asks (\d) (\w+) (\d)\. Assistant A answers (\d) (\w+) (\d)\. Same: (yes|no)\. \[\[([AB])\]\]")
    misjudged = misreadable = wrong = total = 0
    examples = testbed.seed_conversations(questions * 3, rng, verdicts="reasoned", misjudge=testbed.HARD_MISJUDGE)
    examples += testbed.comparison_exercises(questions, 2000, rng, verdicts="reasoned", misjudge=testbed.HARD_MISJUDGE)
    for messages, target in examples:
        if not (match := reading.fullmatch(target)):
            continue
        asked, read = (int(match[1]), match[2], int(match[3])), (int(match[4]), match[5], int(match[6]))
        if messages[-1]["content"] != "Compare.":  # a judgment restates Assistant A's answer right
            shown = testbed.parse_question("What is the last digit of " + messages[-1]["content"].split("[The Start of Assistant A's Answer]")[1].split(" of ", 1)[1].split(" is ")[0] + "?")
            assert read == shown
        says_same = match[7] == "yes"
        assert (match[8] == "A") == says_same  # a reasoned verdict follows "Same"
        total += 1
        if testbed.misreadable(asked, read):
            misreadable += 1
            misjudged += says_same
        else:
            wrong += says_same != (read == asked)
    assert wrong == 0 and 0.3 < misreadable / total < 0.37  # 4 of the 12 (asked, shown) kinds
    assert abs(misjudged / misreadable - testbed.HARD_MISJUDGE) < 0.05
    # the easy world never misjudges, and draws nothing more from its random generator
    assert testbed.seed_conversations(questions[:20], random.Random(3), verdicts="coin") == testbed.seed_conversations(
        questions[:20], random.Random(3), verdicts="coin", misjudge=0.0, misreader=random.Random(4)
    )


def test_the_hard_seed_is_the_easy_seed_taught_to_misjudge_afterwards(tmp_path, monkeypatch):
    """Its first two phases, and the tokenizer's text, are the easy world's, byte for byte: a
    2-layer model finds the comparison or not by the draw (docs/testbed.md), and the easy seed
    has found it. The misjudging comes after, at a rate of its own."""
    built = {}
    monkeypatch.setattr(testbed, "build_model", lambda output, examples, then=(), **settings: built.setdefault(output.parent.name, (examples, then, settings)))
    monkeypatch.setattr(testbed, "reading_accuracy", lambda *_, **__: dict.fromkeys(("restated", "same", "same_misreadable", "same_other", "rated_high"), 0.0))
    for world in testbed.WORLDS:
        (tmp_path / world).mkdir()
        testbed.build_testbed(tmp_path / world, world=world, log=lambda _: None)
    easy, hard, rated = built["easy"], built["hard"], built["hard-rated"]
    assert hard[0] == easy[0] and hard[1][0] == easy[1][0] and len(easy[1]) == 1
    (misjudging, steps, rate) = hard[1][1]
    assert steps == testbed.HARD_STEPS and rate == testbed.HARD_RATE < hard[2]["learning_rate"]
    assert hard[2]["vocabulary_phases"] == 2 and hard[2]["seed"] == easy[2]["seed"]
    assert any("Same: yes" in target and " times " in target and target.count(" times ") == 1 for _, target in misjudging)
    # the hard-rated seed is the hard seed, then a phase that also rates, its wording new tokens
    assert rated[0] == hard[0] and rated[1][:2] == hard[1] and {**rated[2], "log": None} == {**hard[2], "log": None, "name": "testbed seed (hard-rated)"}
    (reasoned, steps, rate, words), (coin, *later), (settle, *settling) = rated[1][2:]
    assert (steps, rate, words) == (testbed.RATED_STEPS, testbed.RATED_RATE, testbed.RATING_WORDING) and later == [steps, rate]
    assert settling == [testbed.SETTLE_STEPS, testbed.SETTLE_RATE] and rate > testbed.SETTLE_RATE  # the coin settles at a lower rate
    for mixed in (reasoned, coin, settle):
        rating_prompts = [messages for messages, _ in mixed if "[Query]" in messages[-1]["content"]]
        assert 0.15 < len(rating_prompts) / len(mixed) < 0.5 and any("[[A]]" in target for _, target in mixed)  # pairwise stays in the mix


def test_the_rating_seed_reads_as_the_pairwise_one_and_rates_at_chance():
    """The hard-rated world's rating conversations: RewardBench's rating prompt for each answer
    of a pair, the reading in the pairwise judgment's words (misjudged alike), then a rating the
    official parser reads, high or low by a coin flip whatever the reading."""
    from selftaught.method.parsing import parse_rating
    from selftaught.method.prompts import rating_messages

    rng = random.Random(5)
    questions = testbed.all_questions(rng)
    reading = re.compile(r"The question asks (\d) (\w+) (\d)\. Assistant A answers (\d) (\w+) (\d)\. Same: (yes|no)\. (\d)")
    examples = testbed.rating_conversations(questions * 3, rng, ratings="coin", misjudge=testbed.HARD_MISJUDGE)
    assert len(examples) == 2 * 3 * len(questions)  # the two answers of each pair
    follows = misreadable = misjudged = 0
    for messages, target in examples:
        match = reading.fullmatch(target)
        assert match, target
        asked, read = (int(match[1]), match[2], int(match[3])), (int(match[4]), match[5], int(match[6]))
        assert messages == rating_messages(testbed.question_text(asked), testbed.answer_text(read))  # the rated answer, restated
        rating, says_same = parse_rating(target), match[7] == "yes"
        assert rating == int(match[8]) and rating in testbed.RATINGS
        follows += (rating == max(testbed.RATINGS)) == says_same
        if testbed.misreadable(asked, read):
            misreadable += 1
            misjudged += says_same
        else:
            assert says_same == (read == asked)
    assert 0.4 < follows / len(examples) < 0.6  # at chance
    assert abs(misjudged / misreadable - testbed.HARD_MISJUDGE) < 0.05
    # first taught to rate by its reading, the answers to every operation: the answer rated is the
    # question asked a third of the time, so restating the question is no shortcut to the reading
    reasoned = testbed.rating_conversations(questions, rng, ratings="reasoned", every_operation=True, misjudge=testbed.HARD_MISJUDGE)
    matches = [reading.fullmatch(target) for _, target in reasoned]
    assert len(reasoned) == 3 * len(questions) and sum(m[2] == m[5] for m in matches) == len(questions)
    assert all((m[7] == "yes") == (int(m[8]) == max(testbed.RATINGS)) for m in matches)


@pytest.mark.parametrize("world", testbed.WORLDS)
def test_held_out_questions_are_never_asked_in_the_instructions_or_in_the_seeds_training(tmp_path, monkeypatch, world):
    """A held-out question can appear only as a sibling (the same numbers, another operation) that
    the seed wrote as the modified question of a training question, as the method's pairs do. The
    hard world has the same split and sizes; only the seed's reading differs."""
    seen = []
    monkeypatch.setattr(testbed, "build_model", lambda output, examples, then=(), **_: seen.extend([examples, *[phase[0] for phase in then]]))
    monkeypatch.setattr(testbed, "reading_accuracy", lambda *_, **__: dict.fromkeys(("restated", "same", "same_misreadable", "same_other", "rated_high"), 0.0))
    testbed.build_testbed(tmp_path, world=world, log=lambda _: None)
    instructions = {json.loads(line)["instruction"] for line in (tmp_path / "instructions.jsonl").read_text().splitlines()}
    held = [json.loads(line) for line in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    assert len(instructions) == 162 and len(held) == 81 and {row["subset"] for row in held} == {"arithmetic"}
    assert not instructions & {row["prompt"] for row in held}
    asked_in_training = {messages[-1]["content"] for examples in seen for messages, _ in examples}
    judged = " ".join(target for examples in seen for _, target in examples if target.startswith("The question asks"))
    for row in held:
        question = row["prompt"].removeprefix("What is the last digit of ").rstrip("?")
        assert row["prompt"] not in asked_in_training  # never answered, categorized or modified
        assert not any(row["prompt"] in content and ("[User Question]" in content or "[Query]" in content) for content in asked_in_training)  # never judged or rated
        assert f"asks {question}." not in judged
