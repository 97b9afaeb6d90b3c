"""GRPO's prompts and rewards (`method/rewards.py`): the judge stage's prompts, a pair's rows side
by side, and rewards that read the verdict as the judge stage does."""

import pytest

from selftaught.method.prompts import JUDGE_SYSTEM_PROMPT
from selftaught.method.rewards import grpo_prompts, rewards, rows_per_pair

PAIRS = [{"id": f"p{i}", "instruction": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]


def test_each_pair_gives_the_judge_stages_prompts_side_by_side_in_a_seeded_order_per_iteration():
    rows = grpo_prompts(PAIRS, format="pairwise", orders="both", seed=0, iteration=1)
    assert len(rows) == 12 and rows_per_pair("pairwise", "both") == 2
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert first["group"] == second["group"] and (first["role"], second["role"]) == ("AB", "BA")
        assert first["prompt"][0]["content"] == JUDGE_SYSTEM_PROMPT
        good, bad = f"good {first['group'][1:]}", f"bad {first['group'][1:]}"
        assert first["prompt"][1]["content"].index(good) < first["prompt"][1]["content"].index(bad)  # AB: the chosen answer is A
        assert second["prompt"][1]["content"].index(bad) < second["prompt"][1]["content"].index(good)
    again = grpo_prompts(PAIRS, format="pairwise", orders="both", seed=0, iteration=1)
    other = grpo_prompts(PAIRS, format="pairwise", orders="both", seed=0, iteration=2)
    assert again == rows and [r["group"] for r in other] != [r["group"] for r in rows]
    assert sorted({r["group"] for r in other}) == sorted(p["id"] for p in PAIRS)


def test_one_random_order_gives_one_row_per_pair_and_pointwise_rates_each_answer():
    random = grpo_prompts(PAIRS, format="pairwise", orders="random", seed=0, iteration=1)
    assert len(random) == 6 and rows_per_pair("pairwise", "random") == 1 and {r["role"] for r in random} <= {"AB", "BA"}
    rated = grpo_prompts(PAIRS, format="pointwise", orders="both", seed=0, iteration=1)
    assert len(rated) == 12 and [r["role"] for r in rated[:2]] == ["chosen", "rejected"] and rows_per_pair("pointwise", "random") == 2
    assert "[Your judgement]" in rated[0]["prompt"][-1]["content"] and "good" in rated[0]["prompt"][-1]["content"]


def test_a_pairwise_verdict_is_rewarded_when_it_names_the_chosen_answer_and_read_as_the_judge_stage_reads_it():
    groups, roles = ["p"] * 4, ["AB", "AB", "BA", "BA"]
    texts = ["A wins. [[A]]", "[[B]]", "B it is [[B]]", "no verdict"]
    got = rewards(groups, roles, texts)
    assert got["correct"] == [1.0, 0.0, 1.0, 0.0]
    assert got["format"] == [1.0, 1.0, 1.0, 0.0]
    assert rewards(["p"], ["AB"], ["[[A]] or [[B]]"]) == {"correct": [0.0], "format": [0.0], "consistency": [0.0]}  # both: unreadable


def test_consistency_pays_only_when_the_same_numbered_judgment_of_the_other_order_is_right_too():
    groups, roles = ["p"] * 4 + ["q"] * 2, ["AB", "AB", "BA", "BA", "AB", "BA"]
    texts = ["[[A]]", "[[A]]", "[[B]]", "[[A]]", "[[A]]", "[[A]]"]  # p: 1st of each order right, 2nd BA wrong; q: BA wrong
    got = rewards(groups, roles, texts)
    assert got["correct"] == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert got["consistency"] == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert rewards(["p"], ["AB"], ["[[A]]"])["consistency"] == [0.0]  # its other order is not in the batch


def test_a_rating_is_right_only_when_the_chosen_answer_is_rated_strictly_higher_than_the_rejected_one():
    groups, roles = ["p"] * 6, ["chosen"] * 3 + ["rejected"] * 3
    texts = ["Good. 8", "Fine. 5", "Meh. 4", "Bad. 3", "Fine. 5", "no rating"]
    got = rewards(groups, roles, texts)
    assert got["correct"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # 8 > 3; a tie; an unreadable partner
    assert got["format"] == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert rewards(["p"], ["chosen"], ["10"])["correct"] == [0.0]  # nothing to compare with


@pytest.mark.parametrize("order", [["AB", "BA"], ["BA", "AB"]])
def test_interleaved_batches_pair_judgments_by_their_number_within_each_row(order):
    roles = [order[0], order[1], order[0], order[1]]
    right = {"AB": "[[A]]", "BA": "[[B]]"}
    texts = [right[roles[0]], right[roles[1]], "x", right[roles[3]]]
    assert rewards(["p"] * 4, roles, texts)["consistency"] == [1.0, 1.0, 0.0, 0.0]
