"""How sure a number is: every accuracy comes with its n and a 95 % interval a person can check by
hand, and two judges on the same examples are told apart only when McNemar's test says so."""

from __future__ import annotations

import math

import pytest

from selftaught.method.intervals import bootstrap, mcnemar, paired, quantile, wilson
from selftaught.method.scoring import EXAMPLE_COUNTS, score


def _hand_wilson(successes: float, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_is_the_textbook_interval_and_stays_inside_zero_and_one():
    nine_of_ten = wilson(9, 10)
    assert (nine_of_ten.low, nine_of_ten.high) == pytest.approx((0.5958, 0.9821), abs=5e-5)  # the published 9/10
    assert (nine_of_ten.low, nine_of_ten.high) == pytest.approx(_hand_wilson(9, 10))
    assert (nine_of_ten.n, nine_of_ten.method) == (10, "wilson")
    none, all_ = wilson(0, 10), wilson(10, 10)
    assert none.low == 0 and none.high == pytest.approx(0.2775, abs=5e-5)
    assert all_.low == pytest.approx(0.7225, abs=5e-5) and all_.high == 1
    assert wilson(0, 0) is None
    # 0.5 for an unparsed verdict: the mean of the scores, over the examples
    assert (wilson(4.5, 8).low, wilson(4.5, 8).high) == pytest.approx(_hand_wilson(4.5, 8))


def test_a_report_carries_n_and_the_interval_of_each_proportion():
    records = [{"subset": "Coding", "winner": "A", "output": "[[A]]" if i < 9 else "[[B]]"} for i in range(10)]
    report = score(records, "rewardbench")
    assert report["accuracy"] == 0.9 and report["evaluated"] == "custom set"
    interval = report["intervals"]["accuracy"]
    assert (interval["n"], interval["method"]) == (10, "wilson")
    assert (interval["low"], interval["high"]) == pytest.approx(_hand_wilson(9, 10))
    assert report["intervals"]["custom"] == interval and report["intervals"]["subsets"]["Coding"] == interval


def test_quantiles_interpolate_as_numpy_does():
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([0.0, 10.0], 0.025) == pytest.approx(0.25)


def test_the_bootstrap_of_a_weighted_section_is_reproducible_and_as_wide_as_its_weights_say():
    # Chat: alpacaeval-easy (weight 100) at 0.8 and mt-bench-easy (weight 28) at 0.5, 200 examples each
    records = [{"subset": "alpacaeval-easy", "winner": "A", "output": "[[A]]" if i % 5 else "[[B]]"} for i in range(200)]
    records += [{"subset": "mt-bench-easy", "winner": "A", "output": "[[A]]" if i % 2 else "[[B]]"} for i in range(200)]
    report = score(records, "rewardbench")
    chat = report["intervals"]["sections"]["Chat"]
    assert report["sections"]["Chat"] == pytest.approx((0.8 * 100 + 0.5 * 28) / 128)
    assert (chat["n"], chat["method"]) == (400, "bootstrap") and report["intervals"]["overall"]["n"] == 400
    assert chat["low"] < report["sections"]["Chat"] < chat["high"]
    # a weighted mean of two independent means: its standard error is sqrt(sum w^2 p(1-p)/n)
    w1, w2 = 100 / 128, 28 / 128
    se = math.sqrt(w1**2 * 0.8 * 0.2 / 200 + w2**2 * 0.25 / 200)
    assert chat["high"] - chat["low"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert score(records, "rewardbench")["intervals"] == report["intervals"]  # a fixed seed: the same examples, the same interval


def test_the_bootstrap_resamples_within_each_stratum_through_the_given_statistic():
    strata = {"a": [1.0] * 5, "b": [0.0, 1.0]}
    spread = bootstrap(strata, lambda s: {"a": sum(s["a"]) / 5, "mean b": sum(s["b"]) / 2, "never": None}, resamples=200)
    assert spread["a"] == (1.0, 1.0) and spread["mean b"] == (0.0, 1.0) and "never" not in spread


def test_an_interval_accompanies_every_section_and_the_overall_of_a_full_rewardbench():
    records = [{"subset": subset, "winner": "B", "output": "[[B]]"} for subset in EXAMPLE_COUNTS for _ in range(3)]
    report = score(records, "rewardbench")
    assert report["comparable"] is True and report["evaluated"] == "RewardBench"
    assert set(report["intervals"]["sections"]) == {"Chat", "Chat Hard", "Safety", "Reasoning"}
    assert report["intervals"]["overall"] == {"low": 1.0, "high": 1.0, "n": 69, "method": "bootstrap"}


def test_mcnemar_on_a_constructed_pair_of_judges():
    # 30 examples: both right on 15, both wrong on 3; the trained judge alone right on 10, the seed alone on 2
    seed = {f"e{i}": 1.0 for i in range(15)} | {f"e{i}": 0.0 for i in range(15, 18)}
    trained = dict(seed)
    seed |= {f"e{i}": 0.0 for i in range(18, 28)} | {f"e{i}": 1.0 for i in range(28, 30)}
    trained |= {f"e{i}": 1.0 for i in range(18, 28)} | {f"e{i}": 0.0 for i in range(28, 30)}
    test = paired(seed, trained)
    assert (test.n, test.better, test.worse) == (30, 10, 2)
    # by hand: X ~ Binomial(12, 1/2); exact 2 P(X <= 2) = 2 (1 + 12 + 66) / 4096; mid-p 2 (P(X < 2) + P(X = 2) / 2)
    assert test.p_exact == pytest.approx(158 / 4096) and test.p_mid == pytest.approx(92 / 4096)
    assert test.significant
    # the same judges on 6 examples: 2 better, 0 worse is within the noise
    small = paired({"a": 0.0, "b": 0.0, "c": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0})
    assert (small.n, small.better, small.worse) == (3, 2, 0) and small.p_exact == 0.5 and small.p_mid == 0.25 and not small.significant


def test_mcnemar_counts_a_half_score_as_between_right_and_wrong_and_equal_counts_as_no_difference():
    assert mcnemar(0, 0) == (1.0, 1.0) and mcnemar(4, 4) == (1.0, 1.0)
    test = paired({"a": 0.5, "b": 1.0, "c": 0.0}, {"a": 1.0, "b": 0.5, "c": 0.5})
    assert (test.better, test.worse) == (2, 1)
