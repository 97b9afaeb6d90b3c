"""Sizing the judge's rounds (method/sampling.py): the fewest expected samples within the rounds
left, for a belief fitted to what the shard drew and what the previous iteration drew."""

import itertools
import math
import random

import pytest

from selftaught.method.sampling import NOTHING, Evidence, Population, Schedule, Track, best_size, fit


def _expected_samples(sizes, a, b):
    """E[samples] of an item with p ~ Beta(a, b) that stops after the first round with a correct one."""
    drawn, total = 0, 0.0
    for size in sizes:
        total += size * math.exp(math.lgamma(b + drawn) + math.lgamma(a + b) - math.lgamma(a + b + drawn) - math.lgamma(b))
        drawn += size
    return total


def _chosen(belief, samples, rounds):
    sizes = []
    while sum(sizes) < samples:
        sizes.append(best_size(belief, sum(sizes), rounds - len(sizes), samples))
    return sizes


@pytest.mark.parametrize("belief", [(1.4, 0.6), (0.6, 1.4), (5.0, 1.0), (1.0, 9.0), (0.3, 0.3)])
def test_the_chosen_rounds_draw_the_fewest_expected_samples_of_any_split_into_that_many_rounds(belief):
    samples, rounds = 10, 3
    chosen = _chosen(belief, samples, rounds)
    assert sum(chosen) == samples and len(chosen) <= rounds
    splits = [
        sizes
        for count in range(1, rounds + 1)
        for cuts in itertools.combinations(range(1, samples), count - 1)
        for sizes in [[b - a for a, b in zip((0, *cuts), (*cuts, samples), strict=True)]]
    ]
    best = min(_expected_samples(sizes, *belief) for sizes in splits)
    assert _expected_samples(chosen, *belief) == pytest.approx(best, rel=1e-9)


def test_an_item_believed_easy_draws_one_sample_and_one_believed_hard_draws_more_at_once():
    assert best_size((20.0, 0.5), 0, 4, 15) == 1
    assert best_size((0.5, 20.0), 0, 4, 15) >= 3
    assert best_size((0.5, 20.0), 12, 1, 15) == 3  # the last round draws what is left of N


def test_the_fit_finds_the_judges_accuracy_and_how_much_history_tells():
    rng = random.Random(0)

    def shard(same):  # the earlier model's accuracy carries over with probability `same`
        tracks = []
        for _ in range(3000):
            before = rng.betavariate(1.4, 0.6)
            now = before if rng.random() < same else rng.betavariate(1.4, 0.6)
            history = Evidence(8, sum(rng.random() < before for _ in range(8)))
            tracks.append(Track(history, Evidence(3, sum(rng.random() < now for _ in range(3)))))
        return tracks

    unrelated, correlated = fit(shard(0.0)), fit(shard(0.9))
    assert unrelated.mean == pytest.approx(0.7, abs=0.03) and 1.0 < unrelated.concentration < 4.0
    assert unrelated.weight < 0.15 < 0.3 < correlated.weight

    def believed(population, history):
        a, b = population.belief(history)
        return a / (a + b)

    assert believed(correlated, Evidence(8, 8)) > 0.9 and believed(correlated, Evidence(8, 0)) < 0.3
    assert 0.6 < believed(unrelated, Evidence(8, 8)) < 0.8 and 0.6 < believed(unrelated, Evidence(8, 0)) < 0.8


def test_the_first_round_follows_history_and_firstround_without_it():
    schedule = Schedule(15, first_round=2)
    easy, hard, unknown = Track(Evidence(1, 1), NOTHING), Track(Evidence(15, 0), NOTHING), Track(NOTHING, NOTHING)
    tracks = [easy] * 50 + [hard] * 10 + [unknown]
    sizes = dict(zip(("easy", "hard", "unknown"), schedule.sizes(0, [easy, hard, unknown], tracks), strict=True))
    assert sizes["easy"] == 1 and sizes["hard"] > 2 and sizes["unknown"] == 2


def test_later_rounds_grow_for_the_items_still_without_a_correct_judgment_and_end_at_n():
    schedule = Schedule(15)
    assert schedule.rounds == 4  # as many as doubling from 1 takes
    # a shard where most items were right at once: those that were not are believed hard
    tracks = [Track(NOTHING, Evidence(1, 1))] * 70 + [Track(NOTHING, Evidence(1, 0))] * 30
    second = schedule.sizes(1, [Track(NOTHING, Evidence(1, 0))], tracks)[0]
    assert second >= 2
    assert schedule.sizes(3, [Track(NOTHING, Evidence(9, 0))], tracks) == [6]


def test_the_cost_model_sees_the_rounds_a_never_correct_item_takes():
    assert Schedule(15).failing_rounds(Population(0.7, 2.0)) == [1, 2, 4, 8]
    assert Schedule(15, 2, "doubling").failing_rounds(Population()) == [2, 4, 8, 1]
    assert (
        Schedule(15, max_rounds=2).failing_rounds(Population(0.7, 2.0))[-1] > 1
        and len(Schedule(15, max_rounds=2).failing_rounds(Population(0.7, 2.0))) == 2
    )
    assert Schedule(15, adaptive=False).failing_rounds(Population()) == [15]
