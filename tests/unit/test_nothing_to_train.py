"""The judge stage says, in its own words, when its kept judgments leave training nothing: the
reason a run stops is on the judge stage, not an empty dataset one stage later."""

from types import SimpleNamespace

import pytest

from selftaught.engines.training import _nothing_fits
from selftaught.stages.judge import nothing_to_train


def _spec(method="sft", balance=True):
    return SimpleNamespace(train=SimpleNamespace(method=method, max_seq_len=512), judge=SimpleNamespace(balance=balance, samples=8))


def test_balancing_winners_that_all_name_one_answer_is_refused_with_both_ways_out():
    """Measured on the hard testbed (DPO, seed 1, iteration 2): 13 pairs, every chosen verdict
    [[B]], so balancing kept none, and the train stage failed with 'no judgment pair fits
    train.maxSeqLen=512 (0 too long)'."""
    counts = {"items": 322, "kept": 202, "pairs": 13, "a_wins": 0, "b_wins": 13}
    why = nothing_to_train(counts, _spec("dpo"), 2)
    assert why.startswith("iteration 2: judge.balance keeps as many [[A]] as [[B]] winners")
    assert "13 pairs of a correct and a wrong judgment kept all name B (A 0, B 13)" in why
    assert "judge.samples" in why and "judge.balance: false" in why
    assert "all name A (A 40, B 0)" in nothing_to_train({"items": 50, "kept": 40, "a_wins": 40, "b_wins": 0}, _spec(), 1)


@pytest.mark.parametrize(
    "counts, spec",
    [
        ({"items": 50, "kept": 40, "a_wins": 1, "b_wins": 39}, _spec()),  # one of each: balanced to 2
        ({"items": 50, "kept": 40, "a_wins": 0, "b_wins": 40}, _spec(balance=False)),  # taken as they are
        ({"items": 50, "kept": 40, "kept_pointwise": 40}, _spec()),  # ratings have no winner to balance
        ({"items": 50, "kept": 40, "kept_pointwise": 20, "a_wins": 0, "b_wins": 20}, _spec()),  # the ratings remain
    ],
)
def test_what_leaves_something_to_train_on_passes(counts, spec):
    assert nothing_to_train(counts, spec, 1) is None


def test_the_older_reasons_keep_their_words():
    assert "no correct verdict for any of 50 items" in nothing_to_train({"items": 50, "kept": 0, "samples": 400}, _spec(), 1)
    assert "needs an item with a correct and a wrong judgment" in nothing_to_train({"items": 50, "kept": 50, "no_wrong": 50}, _spec("dpo"), 3)


def test_an_empty_training_set_is_not_called_a_length_problem():
    assert str(_nothing_fits(_spec().train, 0)) == "no training example to train on: the training data has none"
    assert str(_nothing_fits(_spec().train, 7, "judgment pair")) == "no judgment pair fits train.maxSeqLen=512 (7 too long)"
