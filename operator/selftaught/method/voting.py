"""Majority votes that stop when decided (`evaluate.earlyStop`).

The vote is the scorer's (`method/scoring.py` `majority_verdict`, RewardBench's
`max(set(winners), key=winners.count)`): the most common of the k parsed verdicts, an unparsed
sample (None) counting as a candidate of its own, and a tie between the top candidates an error;
an error scores 0.5, the right letter 1, the other 0. So an example's score is a function of its
outcome, one of "A", "B" or None, and an early stop is exact when the outcome cannot change.

Exact stopping. After a prefix of the k samples with counts (a, b, u) and r samples left, the
outcome is decided when every way the r samples could fall gives the same outcome:
- a letter X leads: decided iff count(X) > count(Y) + r for each other candidate Y (letter or
  unparsed): the r samples all going to Y would otherwise tie (an error) or overtake;
- unparsed leads: decided iff u >= count(Y) + r for each letter Y, since a tie with it is an error
  too (the outcome None either way).
With r >= 1 a decided prefix has a single leader, and that leader is the prefix's own majority: so
scoring the samples drawn (the record's `outputs`) gives the full vote's outcome, and any longer
prefix is decided the same way. `tests/unit/test_voting.py` checks it on every sequence of
outcomes for small k. With the same sample j drawn the same way whether the vote stops or not (a
seed per sample, `stages/evaluate.py`), the score is identical to drawing all k.

Rounds. Votes are drawn in rounds, one batch over the shard each: an undecided example's next
round is the fewest samples that could decide it (all of them going to its best candidate), so a
round never draws past the first point where the vote could be decided, and the last of at most
`ROUNDS` rounds draws what is left. For k = 32 the first round is 17.

Approximate stopping (off by default). Stop when the posterior probability that the remaining
samples change the outcome is below `risk`: the example's verdict probabilities have a uniform
Dirichlet(1, 1, 1) prior over (A, B, unparsed) and the samples drawn as evidence; the r samples
left are then Dirichlet-multinomial, and the flip probability is summed over every way they could
fall. Its real flip rate against the full vote is what `benchmarks/voting.py` measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from selftaught.method.parsing import Verdict

EarlyStop = Literal["exact", "approximate", "off"]
Outcome = Verdict | None  # "A", "B", or None: unparsed or a tie, both an error (0.5)
#: most rounds a vote takes (the last draws what is left): each round is one batch over the shard
ROUNDS = 6
#: the approximate rule's prior over (A, B, unparsed) per example
PRIOR = 1.0


@dataclass(frozen=True)
class Tally:
    """The verdicts of a vote's samples so far."""

    a: int = 0
    b: int = 0
    unparsed: int = 0

    @property
    def drawn(self) -> int:
        return self.a + self.b + self.unparsed

    def add(self, verdict: Outcome, times: int = 1) -> Tally:
        if verdict == "A":
            return Tally(self.a + times, self.b, self.unparsed)
        if verdict == "B":
            return Tally(self.a, self.b + times, self.unparsed)
        return Tally(self.a, self.b, self.unparsed + times)

    @classmethod
    def of(cls, verdicts: list[Outcome]) -> Tally:
        return cls(verdicts.count("A"), verdicts.count("B"), sum(v is None for v in verdicts))


def outcome(tally: Tally) -> Outcome:
    """The scorer's `majority_verdict` of these counts: the single most common candidate (an
    unparsed sample is one), else None (a tie, an error)."""
    counts = sorted(((tally.a, "A"), (tally.b, "B"), (tally.unparsed, None)), key=lambda c: -c[0])
    (top, verdict), (second, _) = counts[0], counts[1]
    if top == 0 or top == second:
        return None
    return verdict  # type: ignore[return-value]


def decided(tally: Tally, left: int) -> bool:
    """Whether every way `left` more samples could fall gives the same outcome (module docstring)."""
    if left <= 0:
        return True
    a, b, u = tally.a, tally.b, tally.unparsed
    if a > b and a > u:
        return a > max(b, u) + left
    if b > a and b > u:
        return b > max(a, u) + left
    if u > a and u > b:
        return u >= max(a, b) + left
    return False  # a tie at the top: one more sample for either side decides it differently


@lru_cache(maxsize=65536)
def flip_risk(tally: Tally, left: int, prior: float = PRIOR) -> float:
    """The posterior probability that the full vote's outcome differs from these samples' own
    (Dirichlet(prior + counts) over the verdicts; the `left` samples Dirichlet-multinomial)."""
    if decided(tally, left):
        return 0.0
    now = outcome(tally)
    alpha = (prior + tally.a, prior + tally.b, prior + tally.unparsed)
    total = sum(alpha)
    base = math.lgamma(left + 1) + math.lgamma(total) - math.lgamma(left + total) - sum(math.lgamma(x) for x in alpha)
    terms = [[math.lgamma(x + weight) - math.lgamma(x + 1) for x in range(left + 1)] for weight in alpha]
    a0, b0, u0 = tally.a, tally.b, tally.unparsed
    risk = 0.0
    for xa in range(left + 1):
        a, part = a0 + xa, base + terms[0][xa]
        for xb in range(left + 1 - xa):
            b, u = b0 + xb, u0 + left - xa - xb
            final = "A" if a > b and a > u else "B" if b > a and b > u else None  # outcome(), inlined
            if final != now:
                risk += math.exp(part + terms[1][xb] + terms[2][left - xa - xb])
    return min(risk, 1.0)


#: Whether a vote may stop: (samples so far, samples left) -> bool.
Stop = Callable[[Tally, int], bool]


def stop_rule(kind: EarlyStop, risk: float = 0.01) -> Stop | None:
    """The rule `evaluate.earlyStop` names (None: draw all k)."""
    if kind == "exact":
        return decided
    if kind == "approximate":
        return lambda tally, left: decided(tally, left) or flip_risk(tally, left) < risk
    return None


def needed(tally: Tally, left: int, stop: Stop) -> int:
    """The fewest more samples after which the vote could stop, all of them going to its likely
    winner: its leader, or either letter when none leads (an unparsed run is never planned for)."""
    now = outcome(tally)
    candidates: tuple[Outcome, ...] = (now,) if now is not None or tally.unparsed > max(tally.a, tally.b) else ("A", "B")
    def could(more: int) -> bool:
        return any(stop(tally.add(verdict, more), left - more) for verdict in candidates)

    low, high = 1, left  # could(left) holds: nothing is left then. More for one candidate only helps it: bisect
    while low < high:
        middle = (low + high) // 2
        if could(middle):
            high = middle
        else:
            low = middle + 1
    return high


def round_size(tally: Tally, k: int, number: int, stop: Stop | None, rounds: int = ROUNDS) -> int:
    """Samples of an undecided vote's round `number` (from 0): the fewest that could decide it,
    and what is left in the last round or without a rule."""
    left = k - tally.drawn
    if stop is None or number >= rounds - 1:
        return left
    return needed(tally, left, stop)


#: Draws one round: (vote, its first sample's number, how many) per vote -> their verdicts, in order.
Draw = Callable[[Sequence[tuple[int, int, int]]], list[list[Outcome]]]


def vote_in_rounds(
    k: int, votes: int, stop: Stop | None, draw: Draw, rounds: int = ROUNDS, finished: Callable[[int, Tally], None] | None = None
) -> list[Tally]:
    """Run `votes` k-sample votes in rounds until each is decided (or all k are drawn); one `draw`
    per round for every vote still undecided; `finished(vote, tally)` as each one ends. Sample j of
    a vote is numbered j in every round schedule, so a vote that stops draws a prefix of what
    drawing all k would."""
    tallies = [Tally() for _ in range(votes)]
    pending = list(range(votes))
    for number in range(rounds if stop is not None else 1):
        if not pending:
            break
        wanted = [(vote, tallies[vote].drawn, round_size(tallies[vote], k, number, stop, rounds)) for vote in pending]
        still = []
        for (vote, _, size), verdicts in zip(wanted, draw(wanted), strict=True):
            if len(verdicts) != size:
                raise ValueError(f"asked for {size} samples of vote {vote}, got {len(verdicts)}")
            tally = tallies[vote]
            for verdict in verdicts:
                tally = tally.add(verdict)
            tallies[vote] = tally
            left = k - tally.drawn
            if left and not (stop is not None and stop(tally, left)):
                still.append(vote)
            elif finished is not None:
                finished(vote, tally)
        pending = still
    return tallies


@dataclass(frozen=True)
class VoteCost:
    """Per example of a k-sample vote: samples drawn and rounds taken (a request's prompt each)."""

    samples: float
    rounds: float


def expected_vote(k: int, accuracy: float, concentration: float, early_stop: EarlyStop = "exact", rounds: int = ROUNDS) -> VoteCost:
    """What an exact-stopping vote draws per example in expectation, when an example's samples are
    right with probability p ~ Beta(accuracy x c, (1 - accuracy) x c) and always parse: the
    rounds above summed over every count they can reach (a Beta-binomial chain, exact). Without
    stopping: k samples, one round."""
    if early_stop == "off" or k <= 0:
        return VoteCost(float(k), 1.0 if k else 0.0)
    return _expected(k, round(accuracy, 6), round(concentration, 6), early_stop == "approximate", rounds)


@lru_cache(maxsize=256)
def _expected(k: int, accuracy: float, concentration: float, approximate: bool, rounds: int) -> VoteCost:
    alpha, beta = max(accuracy, 1e-6) * concentration, max(1 - accuracy, 1e-6) * concentration
    stop = stop_rule("approximate" if approximate else "exact")
    states = {(0, 0): 1.0}  # (right, wrong) -> probability, of the votes still undecided
    samples = taken = 0.0
    for number in range(rounds):
        following: dict[tuple[int, int], float] = {}
        for (right, wrong), chance in states.items():
            tally = Tally(right, wrong)
            size = round_size(tally, k, number, stop, rounds)
            samples += chance * size
            taken += chance
            for more in range(size + 1):
                reached = (right + more, wrong + size - more)
                left = k - sum(reached)
                if left and not stop(Tally(*reached), left):  # type: ignore[misc]
                    following[reached] = following.get(reached, 0.0) + chance * _beta_binomial(more, size, alpha + right, beta + wrong)
        states = following
        if not states:
            break
    return VoteCost(samples, taken)


def _beta_binomial(x: int, n: int, a: float, b: float) -> float:
    return math.exp(
        math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
        + math.lgamma(x + a) + math.lgamma(n - x + b) - math.lgamma(n + a + b)
        + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    )  # fmt: skip
