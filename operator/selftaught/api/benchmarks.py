"""The evaluation benchmarks, one row each: the one table that the spec (`evaluate.benchmark` and
the descriptions of its fields), the scorer (`method/scoring.py`), the readers of an evaluation set
(`stages/sources.py`), the evaluate stage, the cost estimate (`views/estimate.py`) and the command
line (`selftaught score --benchmark`) read.

Adding a benchmark is one row here, then its reader and its scorer (both keyed by its name, and
checked against this table when their modules load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

BenchmarkName = Literal["rewardbench", "rewardbench2", "judgebench"]
#: How the judge is asked about one example: `pairwise`, one verdict on the pair in a random order
#: (and the swapped order with `evaluate.positionConsistency`; each answer rated on its own in
#: `evaluate.mode: rating`); `both orders`, always a verdict in each order, scored on the net
#: vote; `rated`, every answer rated 1-10 on its own.
Asking = Literal["pairwise", "both orders", "rated"]


@dataclass(frozen=True)
class Benchmark:
    name: BenchmarkName
    title: str  #: as people write it: RewardBench
    asks: Asking
    #: how it is judged and scored, in a few words (the spec's `evaluate.benchmark` description)
    scoring: str
    #: the fields of one record of its data (the spec's `data.evaluation.source` description)
    record: str
    #: examples in its usual set: the cost estimate's count when the set cannot be counted
    examples: int
    #: the split of its Hugging Face dataset (the spec's `data.evaluation.split` description)
    hub_split: str
    #: answers in one example (rated one by one when `asks` is `rated`)
    answers: int = 2
    #: whether `evaluate.majorityVote` samples judgments of it (RewardBench's majority vote)
    majority_vote: bool = False
    #: what a judge that guesses scores: the report's chance line
    chance: float = 0.5


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "rewardbench", "RewardBench", "pairwise", "pairwise, one random order, four sections",
            "prompt, chosen, rejected, subset", examples=2985, hub_split="filtered", majority_vote=True,
        ),
        Benchmark(
            "rewardbench2", "RewardBench 2", "rated", "each answer rated 1-10, six subsets",
            "id, prompt, chosen[], rejected[], num_correct, subset", examples=1865, hub_split="test", answers=4,
            chance=0.25,  # the right answer on top of four by chance
        ),
        Benchmark(
            "judgebench", "JudgeBench", "both orders", "pairwise, both orders, net vote per pair",
            "pair_id, question, response_A, response_B, label, source", examples=350, hub_split="gpt",
            chance=0.25,  # a pair counts only when the net vote of both orders is right: both guesses right
        ),
    )
}  # fmt: skip
assert tuple(BENCHMARKS) == get_args(BenchmarkName), "every benchmark name has its row"

#: what the held-out generated pairs are read and scored as (RewardBench-format pairs of the
#: user's own subsets) when `data.evaluation.source` is empty
HELD_OUT: BenchmarkName = "rewardbench"


def names(asks: Asking | None = None) -> list[str]:
    """The benchmarks' names (that ask `asks`), in the table's order."""
    return [b.name for b in BENCHMARKS.values() if asks is None or b.asks == asks]


def need_all(implementations: dict[str, object], what: str) -> None:
    """Raise at import time when a module keyed by benchmark name misses a row of the table or
    names one the table lacks."""
    if set(implementations) != set(BENCHMARKS):
        raise RuntimeError(f"{what} are for {sorted(implementations)}, the benchmarks are {sorted(BENCHMARKS)}")
