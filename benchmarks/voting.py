"""Majority votes that stop once decided, against drawing all k, on the same samples.

Drives the evaluate stage's own code (`stages/evaluate.py` `judge_examples`, `method/voting.py`)
with a simulated judge: each example's samples are right with the example's own probability p,
unparsed 2% of the time, and 30-60 tokens long, all drawn from each request's seed (a seed per
sample, as vLLM honours it), so every mode sees the same sample j of an example. p is either the
same for every example ("fixed p") or drawn per example from a Beta distribution of that mean and
concentration 2 (the estimate's assumption, and benchmarks/sampling.py's), which puts many
examples near a coin flip, where a vote cannot stop early.

For k = 8, 32, 64 and accuracies 0.6-0.95 it prints generated vote tokens against all k (and the
samples per example the planner's closed form expects, `method/voting.py` `expected_vote`, beside
what the exact rule drew), the rounds (batches over the shard) a vote takes, whether the exact
rule's majority-vote score is the full vote's (it must be), and for the approximate rule
(`evaluate.earlyStop: approximate`, `flipRisk` 0.01) its tokens and its flip rate: the share of
examples whose vote verdict differs from the full vote's, and the score difference it makes.

    python benchmarks/voting.py [--examples 2000]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from selftaught.api.spec import Evaluate  # noqa: E402
from selftaught.chat import Sample  # noqa: E402
from selftaught.method.parsing import parse_rewardbench_verdict  # noqa: E402
from selftaught.method.scoring import majority_verdict, score  # noqa: E402
from selftaught.method.voting import expected_vote  # noqa: E402
from selftaught.stages.evaluate import judge_examples  # noqa: E402

KS = (8, 32, 64)
ACCURACIES = (0.6, 0.7, 0.8, 0.9, 0.95)
UNPARSED = 0.02
CONCENTRATION = 2.0


class SimulatedJudge:
    """Greedy: always [[A]]. Sampled: right with the example's p (its prompt names the example),
    unparsed with probability UNPARSED, from the request's seed alone."""

    max_model_len = 1 << 20

    def __init__(self, skill: dict[str, float]):
        self.skill = skill
        self.calls = 0

    def prompt_tokens(self, conversations):
        return [100 for _ in conversations]

    def chat(self, conversations, sampling, seeds=None):
        self.calls += 1
        if sampling.temperature == 0:
            return [[Sample("[[A]]", 1)] for _ in conversations]
        out = []
        for conversation, seed in zip(conversations, seeds, strict=True):
            example = conversation[-1]["content"].split("example=")[1].split()[0]
            p, winner = self.skill[example]
            rng = random.Random(seed)
            other = "B" if winner == "A" else "A"
            text = "I cannot tell." if rng.random() < UNPARSED else f"[[{winner if rng.random() < p else other}]]"
            out.append([Sample(text, rng.randint(30, 60))])
        return out


def world(examples: int, accuracy: float, spread: bool, seed: int):
    rng = random.Random(seed)
    rows, skill = [], {}
    for i in range(examples):
        p = rng.betavariate(accuracy * CONCENTRATION, (1 - accuracy) * CONCENTRATION) if spread else accuracy
        rows.append({"id": f"e{i}", "subset": "alpacaeval-easy", "prompt": f"example=e{i} question", "chosen": "good", "rejected": "bad"})
        skill[f"e{i}"] = p
    return rows, skill


def run(rows, skill, k: int, mode: str):
    from selftaught.method.judging import random_order

    # the judge's truth per example: the letter the chosen answer is shown as
    truth = {row["id"]: (skill[row["id"]], "A" if random_order(row["id"], 0) == "AB" else "B") for row in rows}
    settings = Evaluate(majority_vote=k, position_consistency=False, early_stop=mode, flip_risk=0.01)
    judge = SimulatedJudge(truth)
    judged = judge_examples(rows, "rewardbench", settings, 0, judge)
    return judged, judge.calls - 1  # the greedy batch is not a vote round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    args = parser.parse_args()
    for spread in (False, True):
        title = "every example right with p" if not spread else f"p per example ~ Beta(mean, concentration {CONCENTRATION:g})"
        print(f"\n## {title}; {args.examples} examples, {UNPARSED:.0%} of samples unparsed\n")
        print("| k | accuracy | exact: tokens vs all k | samples/example (closed form) | rounds | same score | approximate: tokens vs all k | flip rate | score diff |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for k in KS:
            for accuracy in ACCURACIES:
                rows, skill = world(args.examples, accuracy, spread, seed=k * 100 + round(accuracy * 100))
                full, _ = run(rows, skill, k, "off")
                exact, exact_rounds = run(rows, skill, k, "exact")
                approximate, _ = run(rows, skill, k, "approximate")
                scores = [score(j.records, "rewardbench")["majority_vote"]["accuracy"] for j in (full, exact, approximate)]
                verdicts = [[majority_verdict([parse_rewardbench_verdict(t) for t in r["outputs"]]) for r in j.records] for j in (full, exact, approximate)]
                flips = sum(a != f for a, f in zip(verdicts[2], verdicts[0], strict=True)) / len(rows)
                same = verdicts[1] == verdicts[0] and scores[1] == scores[0]
                planned = expected_vote(k, accuracy, CONCENTRATION if spread else 1e6).samples  # no unparsed samples in it
                print(
                    f"| {k} | {accuracy:g} | {exact.vote_tokens / full.vote_tokens:.2f}x | {exact.vote_samples / len(rows):.1f} ({planned:.1f}) | "
                    f"{exact.vote_rounds / len(rows):.2f} (at most {exact_rounds}) | {'yes' if same else 'NO'} | "
                    f"{approximate.vote_tokens / full.vote_tokens:.2f}x | {flips:.2%} | {scores[2] - scores[0]:+.4f} |"
                )


if __name__ == "__main__":
    main()
