"""How many judgments an item gets in its next round of rejection sampling.

The bound. Drawing one judgment at a time and stopping at the first correct one draws, for an item
whose judgments are right with probability p, E[min(G, N)] = (1 - (1-p)^N) / p samples (G
geometric, N = `judge.samples`); no schedule draws fewer. But one at a time is up to N rounds, and
every round is a pass over the shard that ends with the GPU waiting for its longest judgment. So
the stage runs at most `judge.rounds` rounds, one batched request per pending item each, and sizes
each item's next round to draw the fewest samples in expectation within the rounds left.

What is known about an item. Its p is unknown; the belief about it is
    p ~ Beta(m·k + w·c', (1-m)·k + w·(s'-c')),
where (m, k) are the mean and concentration of the judge's accuracy over the shard's items, (s', c')
the samples drawn and the correct ones among them when the same pair in the same order was judged
in the previous iteration (nothing in iteration 1), and w in [0, 1] how much one judgment of the
earlier model says about this one. (m, k, w) are fitted, before every round, to everything the
shard has drawn so far (maximum a posteriori under weak priors, so that a shard that has seen
little keeps near them): an item that drew s samples with c correct has the Beta-binomial
likelihood B(a + c, b + s - c) / B(a, b) whatever rule made it stop, since the stopping rule only
looks at samples already drawn. Before the first round nothing of this iteration is known: an item
without history draws `judge.firstRound`, an item with history is sized by (m, k) fitted to the
previous iteration's counts and w at its prior's mode.

The size. An item whose belief is Beta(a, b) and that has drawn s samples, all wrong, with r
rounds left, draws the k minimising
    V(s, r) = min_k  k + P(k more all wrong | s wrong) · V(s + k, r - 1),   V(s, 1) = N - s,
where P(k more all wrong | s wrong) = B(a, b + s + k) / B(a, b + s): a dynamic programme over
(s, r), solved once per distinct belief.

Why the kept judgments stay distributed as with fixed N (the argument is in method/judging.py): a
round's sizes depend on the items' histories and on the earlier rounds of this iteration (the
item's own, all wrong, and the other items'), never on the samples of the round they size; and an
item that finds no correct judgment has drawn all N.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from selftaught.api.spec import Judge

ScheduleKind = Literal["fitted", "doubling"]

#: Prior of the fit. The concentration k: log k ~ Normal(log 2, 1) — judges are right on most
#: items and wrong on a few, rather than equally right on all (k = 2 spreads a mean of 0.7 over
#: easy and hard items); what a shard draws soon outweighs it. The history weight w ~ Beta(2, 2):
#: an earlier model's judgment says something, but less than this model's own.
PRIOR_CONCENTRATION = 2.0
PRIOR_LOG_SPREAD = 1.0
PRIOR_WEIGHT = (2.0, 2.0)
#: Where the fit searches (the mean stays off 0 and 1, where a Beta has no density).
MEAN_RANGE = (0.005, 0.995)
LOG_CONCENTRATION_RANGE = (math.log(0.05), math.log(1000.0))


@dataclass(frozen=True)
class Evidence:
    """Judgments drawn for one item in one iteration, and how many of them were correct."""

    samples: int = 0
    correct: int = 0


NOTHING = Evidence()


@dataclass(frozen=True)
class Track:
    """One item as the schedule sees it: the previous iteration's evidence (NOTHING when it was
    not judged then) and this iteration's so far."""

    history: Evidence
    now: Evidence


@dataclass(frozen=True)
class Population:
    """The judge's accuracy over a shard's items, and how much an item's history counts."""

    mean: float = 0.5
    concentration: float = PRIOR_CONCENTRATION
    weight: float = 0.5

    def belief(self, history: Evidence) -> tuple[float, float]:
        """Beta(a, b) of an item's p before this iteration's samples."""
        a = self.mean * self.concentration + self.weight * history.correct
        b = (1 - self.mean) * self.concentration + self.weight * (history.samples - history.correct)
        return a, b


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_posterior(population: Population, groups: Counter[Track]) -> float:
    total = -((math.log(population.concentration) - math.log(PRIOR_CONCENTRATION)) ** 2) / (2 * PRIOR_LOG_SPREAD**2)
    alpha, beta = PRIOR_WEIGHT
    weight = min(max(population.weight, 1e-9), 1 - 1e-9)
    total += (alpha - 1) * math.log(weight) + (beta - 1) * math.log(1 - weight)
    for track, count in groups.items():
        if track.now.samples:
            a, b = population.belief(track.history)
            wrong = track.now.samples - track.now.correct
            total += count * (_log_beta(a + track.now.correct, b + wrong) - _log_beta(a, b))
    return total


def _golden_max(f: Callable[[float], float], low: float, high: float, steps: int = 28) -> float:
    """The argmax of a unimodal f on [low, high] by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    x1, x2 = high - ratio * (high - low), low + ratio * (high - low)
    f1, f2 = f(x1), f(x2)
    for _ in range(steps):
        if f1 < f2:
            low, x1, f1 = x1, x2, f2
            x2 = low + ratio * (high - low)
            f2 = f(x2)
        else:
            high, x2, f2 = x2, x1, f1
            x1 = high - ratio * (high - low)
            f1 = f(x1)
    return (low + high) / 2


def fit(tracks: Sequence[Track], start: Population = Population(), sweeps: int = 3) -> Population:
    """(m, k, w) maximising the posterior given every item's evidence, by coordinate ascent from
    `start`. Items are grouped by their counts, so the cost grows with distinct counts, not items."""
    groups = Counter(tracks)
    has_history = any(track.history.samples and track.now.samples for track in groups)
    population = start
    for _ in range(sweeps):
        population = _improve(population, groups, "mean", _expit, *(_logit(x) for x in MEAN_RANGE))
        population = _improve(population, groups, "concentration", math.exp, *LOG_CONCENTRATION_RANGE)
        if has_history:  # otherwise the weight stays where it starts: nothing speaks of it
            population = _improve(population, groups, "weight", float, 0.0, 1.0)
    return population


def _improve(population: Population, groups: Counter[Track], name: str, value: Callable[[float], float], low: float, high: float) -> Population:
    """`population` with its field `name` at its best, searched as `value(y)` for y in [low, high]."""

    def score(y: float) -> float:
        return _log_posterior(replace(population, **{name: value(y)}), groups)

    return replace(population, **{name: value(_golden_max(score, low, high))})


def _logit(x: float) -> float:
    return math.log(x / (1 - x))


def _expit(y: float) -> float:
    return 1 / (1 + math.exp(-y))


@lru_cache(maxsize=1024)
def _best_sizes(a: float, b: float, samples: int, rounds: int) -> tuple[tuple[int, ...], ...]:
    """best[r][s]: the size of the next round for an item with belief Beta(a, b) that has drawn s
    samples, all wrong, with r rounds left (the dynamic programme of the module docstring)."""
    log_b = [_log_beta(a, b + j) for j in range(samples + 1)]
    value = [float(samples - s) for s in range(samples + 1)]  # one round left: all that is left
    best = [tuple(samples - s for s in range(samples + 1))] * 2
    for _ in range(2, rounds + 1):
        sizes, costs = [0] * (samples + 1), [0.0] * (samples + 1)
        for drawn in range(samples):
            top, choice = math.inf, samples - drawn
            for size in range(1, samples - drawn + 1):
                cost = size + math.exp(log_b[drawn + size] - log_b[drawn]) * value[drawn + size]
                if cost < top - 1e-12:
                    top, choice = cost, size
            sizes[drawn], costs[drawn] = choice, top
        best.append(tuple(sizes))
        value = costs
    return tuple(best)


def best_size(belief: tuple[float, float], drawn: int, rounds_left: int, samples: int) -> int:
    """Samples for an item's next round: the fewest in expectation within `rounds_left` rounds."""
    if rounds_left <= 1 or drawn >= samples - 1:
        return samples - drawn
    a, b = (max(round(x, 9), 1e-6) for x in belief)
    return _best_sizes(a, b, samples, rounds_left)[rounds_left][drawn]


def doubling_rounds(samples: int, first_round: int) -> list[int]:
    """Round sizes adding up to N, doubling from `first_round` (the schedule before `fitted`)."""
    rounds, size, left = [], first_round, samples
    while left > 0:
        rounds.append(min(size, left))
        left -= rounds[-1]
        size *= 2
    return rounds


@dataclass(frozen=True)
class Schedule:
    """How the stage sizes its rounds: `judge.samples`, `judge.firstRound`, `judge.rounds` and
    `judge.schedule`, or one round of N when sampling is not adaptive."""

    samples: int
    first_round: int = 1
    kind: ScheduleKind = "fitted"
    adaptive: bool = True
    #: most rounds an item takes part in; None: as many as doubling from `first_round` takes
    max_rounds: int | None = None

    @classmethod
    def of(cls, judge: Judge) -> Schedule:
        """The schedule a spec's `judge` section asks for."""
        return cls(judge.samples, judge.first_round, judge.schedule, judge.adaptive, judge.rounds)

    @property
    def rounds(self) -> int:
        if not self.adaptive:
            return 1
        doubling = len(doubling_rounds(self.samples, self.first_round))
        if self.kind == "doubling":
            return doubling
        return min(self.max_rounds or doubling, self.samples)

    def sizes(self, number: int, pending: Sequence[Track], tracks: Sequence[Track]) -> list[int]:
        """The sizes of round `number` (from 0) for the `pending` items (none has a correct
        judgment yet), given every item's track so far."""
        if not self.adaptive:
            return [self.samples] * len(pending)
        if self.kind == "doubling":
            return [doubling_rounds(self.samples, self.first_round)[number]] * len(pending)
        rounds_left = self.rounds - number
        first = self.samples if rounds_left <= 1 else min(self.first_round, self.samples)
        if number == 0:
            known = [Track(NOTHING, track.history) for track in tracks if track.history.samples]
            if not known:
                return [first] * len(pending)
            population = fit(known)  # the previous iteration's items; w stays at its prior's mode
        else:
            population = fit(tracks)
        return [
            first if number == 0 and not track.history.samples
            else best_size(population.belief(track.history), track.now.samples, rounds_left, self.samples)
            for track in pending
        ]  # fmt: skip

    def failing_rounds(self, population: Population) -> list[int]:
        """The rounds of an item without history that never finds a correct judgment, when the
        fit finds `population`: what the cost estimate assumes."""
        sizes: list[int] = []
        while sum(sizes) < self.samples:
            track = Track(NOTHING, Evidence(sum(sizes), 0))
            if sizes and self.adaptive and self.kind == "fitted":
                sizes.append(best_size(population.belief(NOTHING), sum(sizes), self.rounds - len(sizes), self.samples))
            else:
                sizes.append(self.sizes(len(sizes), [track], [track])[0])
        return sizes
