"""Majority votes that stop when decided: the rule is the scorer's, on every sequence of outcomes
for small k, and on simulated votes scored by `method/scoring.py` itself."""

import itertools
import random

import pytest

from selftaught.method.scoring import majority_verdict, score
from selftaught.method.voting import (
    Tally,
    decided,
    expected_vote,
    flip_risk,
    needed,
    outcome,
    round_size,
    stop_rule,
    vote_in_rounds,
)

VERDICTS = ("A", "B", None)


def _sequence_draw(sequences, asked):
    """A draw that hands out each vote's fixed sequence: sample j is the same in any schedule."""

    def draw(wanted):
        asked.append(wanted)
        return [list(sequences[vote][first : first + size]) for vote, first, size in wanted]

    return draw


def test_the_outcome_of_counts_is_the_scorers_majority_verdict():
    for k in range(0, 7):
        for sequence in itertools.product(VERDICTS, repeat=k):
            assert outcome(Tally.of(list(sequence))) == majority_verdict(list(sequence))


def test_decided_means_every_way_the_samples_left_can_fall_gives_the_same_outcome():
    for a, b, u, left in itertools.product(range(6), range(6), range(6), range(6)):
        tally = Tally(a, b, u)
        finals = {
            outcome(Tally(a + rest.count("A"), b + rest.count("B"), u + rest.count(None)))
            for rest in itertools.combinations_with_replacement(VERDICTS, left)
        }
        assert decided(tally, left) == (len(finals) == 1), (tally, left, finals)
        if decided(tally, left) and left:
            assert finals == {outcome(tally)}  # the prefix's own majority is the full vote's


@pytest.mark.parametrize("k", range(1, 8))
def test_stopping_at_the_first_decided_round_gives_the_full_votes_result_for_every_sequence(k):
    sequences = list(itertools.product(VERDICTS, repeat=k))
    asked = []
    tallies = vote_in_rounds(k, len(sequences), stop_rule("exact"), _sequence_draw(sequences, asked))
    for sequence, tally in zip(sequences, tallies, strict=True):
        drawn = list(sequence[: tally.drawn])
        assert Tally.of(drawn) == tally
        assert majority_verdict(drawn) == majority_verdict(list(sequence))  # what the scorer sees, and scores
    for wanted in asked:  # a vote's samples are asked for in order, never twice
        assert all(size >= 1 for _, _, size in wanted)
    if k >= 3:
        assert sum(t.drawn for t in tallies) < k * len(sequences)


def test_without_a_rule_every_vote_draws_all_k_in_one_round():
    sequences = [("A",) * 5, ("B", None, "A", "A", "B")]
    asked = []
    tallies = vote_in_rounds(5, 2, None, _sequence_draw(sequences, asked))
    assert [t.drawn for t in tallies] == [5, 5] and asked == [[(0, 0, 5), (1, 0, 5)]]


def test_rounds_draw_the_fewest_samples_that_could_decide_and_the_last_draws_what_is_left():
    exact = stop_rule("exact")
    assert round_size(Tally(), 32, 0, exact) == 17  # 17 of 32 agreeing decide; 16 cannot
    assert round_size(Tally(12, 5), 32, 1, exact) == 5  # 17 A against at most 5 + 10 B
    assert round_size(Tally(12, 5), 32, 5, exact) == 15  # the last round
    assert needed(Tally(8, 8), 16, exact) == 9  # either letter
    assert needed(Tally(1, 1, 6), 8, exact) == 2  # unparsed leads: u >= max(a, b) + left decides it
    assert round_size(Tally(), 8, 0, None) == 8


def _records(sequences, winners, drawn):
    return [
        {"subset": "alpacaeval-easy", "winner": w, "output": "[[A]]", "outputs": [{"A": "[[A]]", "B": "[[B]]", None: "no verdict"}[v] for v in s[:n]]}
        for s, w, n in zip(sequences, winners, drawn, strict=True)
    ]


@pytest.mark.parametrize("k", [8, 9, 32])
def test_simulated_votes_score_the_same_with_exact_stopping_ties_and_unparsed_included(k):
    rng = random.Random(k)
    sequences, winners = [], []
    for _ in range(3000):
        p = rng.betavariate(1.4, 0.6)
        unparsed = rng.choice([0.0, 0.05, 0.4])
        winner = rng.choice("AB")
        other = "B" if winner == "A" else "A"
        sequences.append(tuple(None if rng.random() < unparsed else winner if rng.random() < p else other for _ in range(k)))
        winners.append(winner)
    tallies = vote_in_rounds(k, len(sequences), stop_rule("exact"), _sequence_draw(sequences, []))
    stopped = score(_records(sequences, winners, [t.drawn for t in tallies]), "rewardbench")["majority_vote"]
    full = score(_records(sequences, winners, [k] * len(sequences)), "rewardbench")["majority_vote"]
    assert stopped["accuracy"] == full["accuracy"] and stopped["subsets"] == full["subsets"]
    ties = sum(outcome(Tally.of(list(s))) is None and len(set(s)) > 1 for s in sequences)
    assert ties > 0  # the simulation has ties and unparsed outcomes to get right
    assert sum(t.drawn for t in tallies) < 0.85 * k * len(sequences)


def test_the_approximate_rule_stops_earlier_and_its_risk_is_a_probability():
    assert flip_risk(Tally(17, 0), 15) == 0.0  # decided
    assert 0 < flip_risk(Tally(10, 0), 22) < 0.01 < flip_risk(Tally(4, 0), 28)
    assert flip_risk(Tally(3, 3), 2) > 0.5  # a tie now: almost any sample changes it
    approximate = stop_rule("approximate", 0.01)
    assert round_size(Tally(), 32, 0, approximate) < round_size(Tally(), 32, 0, stop_rule("exact"))


def test_the_planners_expected_samples_match_the_rounds_on_simulated_votes():
    rng = random.Random(3)
    k, drawn, rounds, votes = 32, 0, 0, 20000
    ps = [rng.betavariate(0.7 * 2, 0.3 * 2) for _ in range(votes)]
    sequences = [tuple("A" if rng.random() < p else "B" for _ in range(k)) for p in ps]
    asked = []
    tallies = vote_in_rounds(k, votes, stop_rule("exact"), _sequence_draw(sequences, asked))
    drawn, rounds = sum(t.drawn for t in tallies) / votes, sum(len(w) for w in asked) / votes
    expected = expected_vote(k, 0.7, 2.0)
    assert expected.samples == pytest.approx(drawn, rel=0.02) and expected.rounds == pytest.approx(rounds, rel=0.02)
    assert 17 < expected.samples < 0.75 * k
    assert expected_vote(k, 0.7, 2.0, "off").samples == k


def test_a_round_is_the_fewest_samples_that_could_decide_the_vote_for_its_likely_winner():
    exact = stop_rule("exact")
    for a, b, u, left in itertools.product(range(6), range(6), range(4), range(1, 9)):
        tally = Tally(a, b, u)
        if decided(tally, left):
            continue
        now = outcome(tally)
        candidates = (now,) if now is not None or u > max(a, b) else ("A", "B")
        fewest = min(m for m in range(1, left + 1) if any(decided(tally.add(c, m), left - m) for c in candidates))
        assert needed(tally, left, exact) == fewest, (tally, left)
