"""The evaluate stage's majority votes: a seed per sample, so a vote that stops once decided draws
a prefix of the full vote's samples and scores the same; what it saved is counted."""

import random

from selftaught.api.spec import Evaluate
from selftaught.chat import Sample
from selftaught.method.scoring import score
from selftaught.method.selection import priority
from selftaught.stages.evaluate import judge_examples, vote_seed


class SeededJudge:
    """A judge whose sample depends only on its request's seed (as vLLM's per-request seed): right
    with the example's own accuracy (the number in its prompt), sometimes unparsed; the greedy
    answer is always [[A]]."""

    max_model_len = 4096

    def __init__(self):
        self.samples = 0
        self.calls = []

    def prompt_tokens(self, conversations):
        return [100 for _ in conversations]

    def chat(self, conversations, sampling, seeds=None):
        self.calls.append((len(conversations), sampling.n))
        if sampling.temperature == 0:
            return [[Sample("[[A]]", 3)] for _ in conversations]
        assert sampling.n == 1 and seeds is not None  # a request per sample, each with its own seed
        out = []
        for conversation, seed in zip(conversations, seeds, strict=True):
            rng = random.Random(seed)
            accuracy = int(conversation[-1]["content"].split("accuracy=")[1].split()[0]) / 100
            roll = rng.random()
            text = "no verdict" if roll < 0.05 else "[[A]]" if rng.random() < accuracy else "[[B]]"
            out.append([Sample(text, 10 + seed % 7)])
            self.samples += 1
        return out


def _examples(count=120):
    rng = random.Random(0)
    return [
        {"id": f"e{i}", "subset": "alpacaeval-easy", "prompt": f"accuracy={rng.choice([5, 30, 50, 55, 70, 90, 100])} q{i}", "chosen": "good", "rejected": "bad"}
        for i in range(count)
    ]


def _settings(**kwargs):
    return Evaluate(majority_vote=32, position_consistency=False, **kwargs)


def test_exact_stopping_draws_a_prefix_of_the_full_vote_and_scores_the_same():
    examples = _examples()
    full_engine, exact_engine = SeededJudge(), SeededJudge()
    full = judge_examples(examples, "rewardbench", _settings(early_stop="off"), 7, full_engine)
    exact = judge_examples(examples, "rewardbench", _settings(), 7, exact_engine)
    for whole, stopped in zip(full.records, exact.records, strict=True):
        assert len(whole["outputs"]) == 32 and 17 <= len(stopped["outputs"]) <= 32
        assert stopped["outputs"] == whole["outputs"][: len(stopped["outputs"])]  # sample j is the same sample
    assert score(exact.records, "rewardbench")["majority_vote"] == score(full.records, "rewardbench")["majority_vote"] | {
        "errors": score(exact.records, "rewardbench")["majority_vote"]["errors"]  # unparsed samples are counted where drawn
    }
    assert exact.vote_all == full.vote_all == full.vote_samples == 32 * len(examples)
    assert exact.vote_samples == exact_engine.samples < 0.8 * full.vote_samples
    assert exact.vote_tokens_saved > 0 and full.vote_tokens_saved == 0
    assert exact.tokens == 3 * len(examples) + exact.vote_tokens
    assert 2 < len(exact_engine.calls) <= 1 + 6 and len(full_engine.calls) == 2  # greedy, then one batch per round


def test_progress_counts_the_samples_a_stopped_vote_did_not_draw_as_done():
    started, skipped = [], []
    judged = judge_examples(_examples(40), "rewardbench", _settings(), 1, SeededJudge(), started.append, skipped.append)
    assert started == [40 + 40 * 32]
    assert sum(skipped) == judged.vote_all - judged.vote_samples > 0


def test_the_approximate_rule_draws_fewer_and_says_so():
    examples = _examples()
    full = judge_examples(examples, "rewardbench", _settings(early_stop="off"), 7, SeededJudge())
    exact = judge_examples(examples, "rewardbench", _settings(), 7, SeededJudge())
    approximate = judge_examples(examples, "rewardbench", _settings(early_stop="approximate", flip_risk=0.05), 7, SeededJudge())
    assert approximate.vote_samples < exact.vote_samples
    assert all(a["outputs"] == f["outputs"][: len(a["outputs"])] for a, f in zip(approximate.records, full.records, strict=True))


def test_vote_seeds_are_per_example_and_sample():
    assert vote_seed(0, "e1", 3) == priority(0, "vote:e1:3") % 2**31
    assert len({vote_seed(0, "e1", j) for j in range(32)} | {vote_seed(0, "e2", j) for j in range(32)}) == 64
