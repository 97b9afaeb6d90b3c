import random
from collections import Counter

from selftaught.chat import Sample
from selftaught.method.judging import (
    BalanceCounts,
    ItemState,
    JudgeItem,
    balance,
    choose_correct,
    judge_items,
    random_order,
    sampling_rounds,
)

PAIR = {"id": "p1", "instruction": "What is 2+2?", "chosen": "4", "rejected": "5"}


def test_both_orders_show_the_chosen_answer_first_then_second():
    first, second = judge_items(PAIR, "both", seed=0)
    assert (first.order, first.expected) == ("AB", "A")
    assert (second.order, second.expected) == ("BA", "B")
    assert "[The Start of Assistant A's Answer]\n4\n" in first.messages()[1]["content"]
    assert "[The Start of Assistant A's Answer]\n5\n" in second.messages()[1]["content"]


def test_random_order_is_reproducible_and_roughly_fair():
    orders = [random_order(f"id{i}", seed=1) for i in range(1000)]
    assert orders == [random_order(f"id{i}", seed=1) for i in range(1000)]
    assert 400 < orders.count("AB") < 600
    assert len(judge_items(PAIR, "random", seed=0)) == 1


def test_fixed_sampling_is_one_round_of_n_and_adaptive_rounds_double_up_to_n():
    assert sampling_rounds(15, 2, adaptive=False) == [15]
    assert sampling_rounds(15, 2, adaptive=True) == [2, 4, 8, 1]
    assert sum(sampling_rounds(32, 3, adaptive=True)) == 32


def test_a_correct_sample_is_kept_and_wrong_or_unparseable_ones_are_not():
    state = ItemState(JudgeItem("p1", "BA", "q", "good", "bad"))  # chosen shown second: expect B
    assert choose_correct(state, [Sample("[[A]]", 3), Sample("no verdict", 2)], random.Random(0)) is None
    kept = choose_correct(state, [Sample("B is right. [[B]]", 5), Sample("[[A]]", 3)], random.Random(0))
    assert kept["winner"] == "B" and kept["judgment"] == "B is right. [[B]]"
    assert (state.samples, state.tokens, state.unparsed) == (4, 13, 1)


def test_the_kept_judgment_is_a_random_one_among_the_correct_samples():
    samples = [Sample(f"reason {i} [[A]]", 1) for i in range(5)]
    picks = Counter(
        choose_correct(ItemState(JudgeItem("p", "AB", "q", "a", "b")), samples, random.Random(seed))["judgment"]
        for seed in range(200)
    )
    assert len(picks) == 5


def test_balancing_keeps_all_of_the_rarer_winner_and_as_many_of_the_other():
    records = [{"id": i, "winner": "A"} for i in range(30)] + [{"id": 100 + i, "winner": "B"} for i in range(10)]
    kept = list(balance(records, BalanceCounts(a_wins=30, b_wins=10), seed=0))
    assert Counter(r["winner"] for r in kept) == {"A": 10, "B": 10}
    assert kept == list(balance(records, BalanceCounts(a_wins=30, b_wins=10), seed=0))
    assert kept != list(balance(records, BalanceCounts(a_wins=30, b_wins=10), seed=1))
