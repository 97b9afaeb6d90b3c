import pytest

from selftaught.method.metrics import EXAMPLE_COUNTS, Scoreboard, majority, score, section_scores


def test_an_unparseable_verdict_scores_half():
    assert score("A", "A") == 1.0 and score("B", "A") == 0.0 and score(None, "A") == 0.5


def test_majority_vote_ties_and_empty_votes_count_as_unparseable():
    assert majority(["A", "A", "B", None]) == "A"
    assert majority(["A", "B"]) is None
    assert majority([None, None]) is None


def test_sections_are_weighted_by_rewardbench_example_counts_and_overall_is_their_mean():
    subsets = {"math-prm": 1.0, "hep-python": 0.0, "alpacaeval-easy": 0.5}
    sections = section_scores(subsets)
    reasoning = EXAMPLE_COUNTS["math-prm"] / (EXAMPLE_COUNTS["math-prm"] + EXAMPLE_COUNTS["hep-python"])
    assert sections == {"Reasoning": pytest.approx(reasoning), "Chat": 0.5}


def test_subsets_rewardbench_does_not_know_are_sections_of_their_own():
    assert section_scores({"Coding": 0.25, "mt-bench-hard": 1.0}) == {"Chat Hard": 1.0, "Coding": 0.25}


def test_scoreboards_merge_across_shards_into_one_report():
    first, second = Scoreboard(), Scoreboard()
    first.add({"subset": "Coding", "verdict": "A", "score": 1.0, "consistent": 1.0, "swapped_score": 1.0, "vote_score": 1.0})
    second.add({"subset": "Coding", "verdict": None, "score": 0.5, "consistent": 0.0, "swapped_score": 0.0, "vote_score": 0.0})
    second.add({"subset": "Math", "verdict": "B", "score": 0.0, "consistent": 0.0, "swapped_score": 1.0, "vote_score": 1.0})
    board = Scoreboard.from_json(first.to_json())
    board.merge(Scoreboard.from_json(second.to_json()))
    report = board.report()
    assert report["examples"] == 3
    assert report["subsets"] == {"Coding": 0.75, "Math": 0.0}
    assert report["overall"] == pytest.approx(0.375)
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["unparsed_rate"] == pytest.approx(1 / 3)
    assert report["position_consistent_accuracy"] == pytest.approx(1 / 3)
    assert report["both_orders_accuracy"] == pytest.approx((1.5 + 2.0) / 6)
    assert report["majority_vote_accuracy"] == pytest.approx(2 / 3)
