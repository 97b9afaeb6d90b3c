"""The testbed's world (docs/testbed.md): pairs that differ only in the question they answer, a
held-out set the seed never saw, a reading that is right and verdicts that follow it or not."""

import json
import random

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


def test_held_out_questions_are_never_asked_in_the_instructions_or_in_the_seeds_training(tmp_path, monkeypatch):
    """A held-out question can appear only as a sibling (the same numbers, another operation) that
    the seed wrote as the modified question of a training question, as the method's pairs do."""
    seen = []
    monkeypatch.setattr(testbed, "build_model", lambda output, examples, then=(), **_: seen.extend([examples, *[e for e, _ in then]]))
    testbed.build_testbed(tmp_path, log=lambda _: None)
    instructions = {json.loads(line)["instruction"] for line in (tmp_path / "instructions.jsonl").read_text().splitlines()}
    held = [json.loads(line) for line in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    assert len(instructions) == 162 and len(held) == 81 and {row["subset"] for row in held} == {"arithmetic"}
    assert not instructions & {row["prompt"] for row in held}
    asked_in_training = {messages[-1]["content"] for examples in seen for messages, _ in examples}
    judged = " ".join(target for examples in seen for _, target in examples if target.startswith("The question asks"))
    for row in held:
        question = row["prompt"].removeprefix("What is the last digit of ").rstrip("?")
        assert row["prompt"] not in asked_in_training  # never answered, categorized or modified
        assert not any(row["prompt"] in content and "[User Question]" in content for content in asked_in_training)  # never judged
        assert f"asks {question}." not in judged
