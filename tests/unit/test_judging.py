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
    random_order,
    sample_in_rounds,
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
