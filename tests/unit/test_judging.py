import math
import random
from collections import Counter

import pytest

from selftaught.chat import Sample
from selftaught.method.judging import (
    BalanceCounts,
    ItemState,
    JudgeItem,
    balance,
    choose_correct,
    judge_items,
    preference_record,
    random_order,
    sample_in_rounds,
    sft_records,
)
from selftaught.method.sampling import Evidence, Population, Schedule
from selftaught.method.selection import priority

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


def test_fixed_sampling_is_one_round_of_n_and_doubling_rounds_double_up_to_n():
    pending = [ItemState(JudgeItem("p", "AB", "q", "a", "b")).track]
    assert Schedule(15, adaptive=False).rounds == 1 and Schedule(15, adaptive=False).sizes(0, pending, pending) == [15]
    doubling = Schedule(15, 2, "doubling")
    assert [doubling.sizes(n, pending, pending)[0] for n in range(doubling.rounds)] == [2, 4, 8, 1]
    assert sum(Schedule(32, 3, "doubling").failing_rounds(Population())) == 32


def test_a_correct_sample_is_kept_and_wrong_or_unparseable_ones_are_not():
    state = ItemState(JudgeItem("p1", "BA", "q", "good", "bad"))  # chosen shown second: expect B
    assert choose_correct(state, [Sample("[[A]]", 3), Sample("no verdict", 2)], random.Random(0)) is None
    kept = choose_correct(state, [Sample("B is right. [[B]]", 5), Sample("[[A]]", 3)], random.Random(0))
    assert kept["winner"] == "B" and kept["judgment"] == "B is right. [[B]]"
    assert (state.samples, state.tokens, state.unparsed) == (4, 13, 1)
    assert (kept["samples"], kept["correct"]) == (4, 1)  # what the next iteration sizes this item's rounds from


def test_the_kept_judgment_is_a_random_one_among_the_correct_samples():
    samples = [Sample(f"reason {i} [[A]]", 1) for i in range(5)]
    picks = Counter(choose_correct(ItemState(JudgeItem("p", "AB", "q", "a", "b")), samples, random.Random(seed))["judgment"] for seed in range(200))
    assert len(picks) == 5


def test_balancing_keeps_all_of_the_rarer_winner_and_as_many_of_the_other():
    records = [{"id": i, "winner": "A"} for i in range(30)] + [{"id": 100 + i, "winner": "B"} for i in range(10)]
    kept = list(balance(records, BalanceCounts(a_wins=30, b_wins=10), seed=0))
    assert Counter(r["winner"] for r in kept) == {"A": 10, "B": 10}
    assert kept == list(balance(records, BalanceCounts(a_wins=30, b_wins=10), seed=0))
    assert kept != list(balance(records, BalanceCounts(a_wins=30, b_wins=10), seed=1))


STYLES = {"short": 0.5, "long": 0.3, "odd": 0.2}  # how a correct judgment reads, by probability


def _simulated_draw(skill):
    """A judge right with each item's own probability; a correct judgment comes in three styles.
    Each request draws from its own seed, as vLLM does."""

    def draw(pending, sizes, seeds):
        results = []
        for state, size, seed in zip(pending, sizes, seeds, strict=True):
            rng, samples = random.Random(seed), []
            for _ in range(size):
                if rng.random() < skill[state.item.example_id]:
                    style = rng.choices(list(STYLES), list(STYLES.values()))[0]
                    samples.append(Sample(f"{style} [[{state.item.expected}]]", 1))
                else:
                    samples.append(Sample("[[A]]" if state.item.expected == "B" else "[[B]]", 1))
            results.append(samples)
        return results

    return draw


def _kept(schedule, trials, items=30, samples=6, seed=0):
    """Kept judgments over `trials` shards of `items` items whose accuracies are 0.05, 0.3 or
    0.9, each with a history (its samples and correct ones, drawn at its accuracy) half the time."""
    rng = random.Random(seed)
    kept, tried, drawn = Counter(), Counter(), 0
    for trial in range(trials):
        skill, states = {}, []
        for i in range(items):
            p = (0.05, 0.3, 0.9)[i % 3]
            skill[f"{trial}:{i}"] = p
            state = ItemState(JudgeItem(f"{trial}:{i}", "AB", "q", "a", "b"))
            if rng.random() < 0.5:
                first = next((k + 1 for k in range(samples) if rng.random() < p), samples)
                state.history = Evidence(first, int(first < samples or rng.random() < p))
            states.append(state)
        for state in sample_in_rounds(states, schedule, _simulated_draw(skill), lambda s, n: priority(seed, f"{s.item.key}:{n}") % 2**31):
            kept[(skill[state.item.example_id], state.kept["judgment"].split()[0])] += 1
        for state in states:
            tried[skill[state.item.example_id]] += 1
            drawn += state.samples
    return kept, tried, drawn


def test_fitted_rounds_keep_judgments_distributed_as_fixed_n_does():
    """The unbiasedness argument of method/judging.py, checked: per accuracy, the same keep rate
    (1 - (1-p)^N) and the same mix of correct judgments (STYLES) as sampling N at once."""
    fitted, fixed = Schedule(6), Schedule(6, adaptive=False)
    kept, tried, drawn = _kept(fitted, trials=200)
    kept_fixed, _, drawn_fixed = _kept(fixed, trials=200, seed=1)
    assert drawn < 0.6 * drawn_fixed  # the rounds did stop early
    for p in (0.05, 0.3, 0.9):
        n = tried[p]
        for counts in (kept, kept_fixed):
            rate = sum(c for (q, _), c in counts.items() if q == p) / n
            expected = 1 - (1 - p) ** 6
            assert rate == pytest.approx(expected, abs=4.5 * math.sqrt(expected * (1 - expected) / n) + 1e-9)
            total = sum(c for (q, _), c in counts.items() if q == p)
            for style, share in STYLES.items():
                assert counts[(p, style)] / total == pytest.approx(share, abs=4.5 * math.sqrt(share * (1 - share) / total))


def test_for_dpo_a_round_with_a_right_and_a_wrong_judgment_gives_both_and_a_cut_one_is_neither():
    state = ItemState(JudgeItem("p1", "AB", "q", "good", "bad"), wants_rejected=True)
    choose_correct(state, [Sample("half a verd", 9, truncated=True), Sample("A wins [[A]]", 3), Sample("B wins [[B]]", 3)], random.Random(0))
    assert state.done and state.kept["judgment"] == "A wins [[A]]" and state.rejected == "B wins [[B]]"
    record = preference_record({**state.kept, "rejected": state.rejected})
    assert (record["id"], record["chosen"], record["rejected"], record["winner"]) == ("p1:AB", "A wins [[A]]", "B wins [[B]]", "A")
    assert record["messages"] == state.item.messages()


def test_for_dpo_an_unparseable_judgment_is_a_rejected_one_and_sampling_goes_on_until_there_is_one():
    state = ItemState(JudgeItem("p1", "AB", "q", "good", "bad"), wants_rejected=True)
    choose_correct(state, [Sample("A wins [[A]]", 3)], random.Random(0))
    assert state.kept is not None and not state.done  # right, but no wrong one yet
    choose_correct(state, [Sample("A again [[A]]", 3), Sample("I cannot decide", 3)], random.Random(0))
    assert state.done and state.rejected == "I cannot decide" and state.kept["judgment"] == "A wins [[A]]"
    assert (state.kept["samples"], state.samples) == (1, 3)  # the next iteration sizes from the search for the right one


def test_for_dpo_an_item_judged_right_every_time_draws_all_n_and_gives_no_pair():
    draw = lambda pending, sizes, seeds: [[Sample("[[A]]", 1)] * size for size in sizes]  # noqa: E731
    for schedule in (Schedule(8), Schedule(8, kind="doubling", first_round=2), Schedule(8, adaptive=False)):
        state = ItemState(JudgeItem("p1", "AB", "q", "good", "bad"), wants_rejected=True)
        assert list(sample_in_rounds([state], schedule, draw, lambda s, n: n)) == []
        assert state.kept is not None and state.rejected is None and state.samples == 8


def test_for_dpo_rejected_judgments_are_distributed_as_a_wrong_judgment_is():
    """The rejected judgment is a uniformly random wrong one of the first round that has one, so
    its mix of wrong styles is the judge's own, however the rounds were cut."""
    wrong = {"swap": 0.6, "none": 0.4}  # a wrong verdict, or no verdict at all

    def draw(pending, sizes, seeds):
        results = []
        for _state, size, seed in zip(pending, sizes, seeds, strict=True):
            rng, samples = random.Random(seed), []
            for _ in range(size):
                if rng.random() < 0.7:
                    samples.append(Sample("right [[A]]", 1))
                else:
                    style = rng.choices(list(wrong), list(wrong.values()))[0]
                    samples.append(Sample("swap [[B]]" if style == "swap" else "none", 1))
            results.append(samples)
        return results

    picked = Counter()
    for trial in range(400):
        states = [ItemState(JudgeItem(f"{trial}:{i}", "AB", "q", "a", "b"), wants_rejected=True) for i in range(10)]
        for state in sample_in_rounds(states, Schedule(8), draw, lambda s, n, trial=trial: priority(trial, f"{s.item.key}:{n}") % 2**31):
            picked[state.rejected.split()[0]] += 1
    total = sum(picked.values())
    assert total > 3000  # of 4,000 items, 1 - 0.7^8 = 94 % find a wrong one in 8
    assert picked["swap"] / total == pytest.approx(0.6, abs=4.5 * math.sqrt(0.24 / total))


def _rated(state, chosen_texts, rejected_texts, seed=0):
    samples = [Sample(t, 2) for t in chosen_texts] + [Sample(t, 2) for t in rejected_texts]
    return choose_correct(state, samples, random.Random(seed))


def test_a_rated_pair_is_kept_only_when_the_chosen_answer_is_rated_strictly_higher():
    from selftaught.method.judging import RatingItem

    state = ItemState(RatingItem("p1", "What is 2+2?", "4", "5"))
    assert _rated(state, ["Fine. 7", "Meh. 5", "No rating", "Good. 6"], ["Bad. 3", "Same. 5", "Bad. 2", "Better. 9"]) is not None
    assert (state.samples, state.unparsed, state.ties, state.inverted, state.correct) == (4, 1, 1, 1, 1)
    assert state.kept["ratings"] == [7, 3] and state.kept["judgments"] == ["Fine. 7", "Bad. 3"]
    chosen, rejected = sft_records(state.kept)
    assert chosen["messages"][0]["content"].rstrip().endswith("[Your judgement]") and "[Response]\n4\n" in chosen["messages"][0]["content"]
    assert "[Response]\n5\n" in rejected["messages"][0]["content"] and rejected["completion"] == "Bad. 3"
    assert (chosen["id"], rejected["id"], chosen["winner"]) == ("p1:rating:chosen", "p1:rating:rejected", None)


@pytest.mark.parametrize("text", ["Great answer. 0", "Rating: 7.", "Eleven out of ten: 11", "8/10 and more words", ""])
def test_a_bad_rating_is_unparseable_never_zero(text):
    from selftaught.method.judging import RatingItem

    state = ItemState(RatingItem("p1", "q", "good", "bad"))
    assert _rated(state, [text], ["Poor. 1"]) is None
    assert state.unparsed == 1 and state.ties == state.inverted == 0


def test_pairwise_and_pointwise_items_of_one_pair_mix_in_the_training_data_and_only_pairwise_are_balanced():
    from selftaught.method.judging import RatingItem

    items = judge_items(PAIR, "both", seed=0, format="pairwise+pointwise")
    assert [type(item).__name__ for item in items] == ["JudgeItem", "JudgeItem", "RatingItem"]
    assert [item.key for item in items] == ["p1:AB", "p1:BA", "p1:rating"]
    assert judge_items(PAIR, "both", seed=0, format="pointwise") == [RatingItem("p1", "What is 2+2?", "4", "5")]
    pairwise = [{"id": f"a{i}", "order": "AB", "winner": "A", "messages": [], "judgment": "x [[A]]"} for i in range(3)]
    pointwise = [{"id": "r", "order": "rating", "winner": None, "rated": [[], []], "judgments": ["x 8", "y 2"], "ratings": [8, 2]}]
    kept = list(balance(pairwise + pointwise, BalanceCounts(a_wins=3, b_wins=1), seed=0))
    assert sum(r["winner"] == "A" for r in kept) == 1 and pointwise[0] in kept  # ratings have no position to balance
    examples = [example for record in kept for example in sft_records(record)]
    assert [e["completion"] for e in examples][-2:] == ["x 8", "y 2"] and len(examples) == 3
