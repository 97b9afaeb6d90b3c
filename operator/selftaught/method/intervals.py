"""How sure a number is: 95 % intervals for the scores a judge gets, and a paired test for whether
one judge beats another on the same examples. Pure standard library: the scorer runs wherever
`selftaught score` does, with no numpy or scipy.

- **Wilson** for a mean of per-example scores in [0, 1] over n examples: a proportion (JudgeBench's
  correct pairs, position consistency), and also RewardBench's 1 / 0.5 / 0 and RewardBench 2's
  shared points. A score in [0, 1] with mean p varies at most as much as a 0/1 outcome with mean
  p does (p(1 - p)), so for such a mean the interval is, if anything, wider than it needs to be;
  unlike the normal approximation it stays inside [0, 1] and is not zero-width at 9/9.
- **Bootstrap** (percentile, a fixed seed, so the same examples always give the same interval) for
  a number that weights subsets: RewardBench's sections and overall, RewardBench 2's Ties score
  and overall. Each subset is resampled within itself, at its own size, and the resample goes
  through the scorer's own aggregation (the statistic the caller passes), so the interval is of
  the very number printed. Units may be clusters (RewardBench 2's Ties: a prompt's ref and tied
  records together).
- **McNemar's test** (exact binomial, and its mid-p) on paired outcomes: two judges on the same
  examples, counting only where they differ. For scores between 0 and 1 (an error's 0.5) it is the
  sign test on the per-example differences, which is McNemar's test when every score is 0 or 1.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, TypeVar

#: the level of every interval selftaught prints
LEVEL = 0.95
#: resamples of a bootstrap: percentile ends of a 95 % interval move by about 0.002 between seeds
RESAMPLES = 1000
#: the bootstrap's seed: an interval is a function of the examples alone
SEED = 0
#: a difference is "larger than the noise" when McNemar's mid-p is below this
SIGNIFICANCE = 0.05

U = TypeVar("U")


@dataclass(frozen=True)
class Interval:
    """A 95 % interval of a number over `n` examples, and how it was made."""

    low: float
    high: float
    n: int
    method: str  #: "wilson" or "bootstrap"

    def as_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "n": self.n, "method": self.method}


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(total: float, n: int, level: float = LEVEL) -> Interval | None:
    """Wilson's score interval for the mean `total / n` of n scores in [0, 1]; None for n = 0."""
    if n <= 0:
        return None
    z = _z(level)
    p = min(max(total / n, 0.0), 1.0)
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    low = 0.0 if p == 0 else max(0.0, centre - half)  # exactly 0 (and 1), not a rounding error away
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return Interval(low, high, n, "wilson")


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolated linearly (numpy's default)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap(
    strata: Mapping[str, Sequence[U]],
    statistic: Callable[[dict[str, list[U]]], Mapping[str, float | None]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the numbers `statistic` computes from units grouped in strata
    (subsets): each stratum resampled with replacement at its own size, `resamples` times, from a
    fixed seed. A number the statistic leaves undefined (None) in a resample is left out of that
    resample; one never defined gets no interval."""
    rng = random.Random(seed)
    names = sorted(strata)
    drawn: dict[str, list[float]] = {}
    for _ in range(resamples):
        sample = {name: rng.choices(strata[name], k=len(strata[name])) for name in names}
        for key, value in statistic(sample).items():
            if value is not None and not math.isnan(value):
                drawn.setdefault(key, []).append(value)
    tail = (1 - level) / 2
    result = {}
    for key, values in drawn.items():
        values.sort()
        result[key] = (quantile(values, tail), quantile(values, 1 - tail))
    return result


@dataclass(frozen=True)
class Paired:
    """Two judges on the same examples: where the second scored higher (`better`), lower
    (`worse`), and the two-sided p-values of McNemar's exact test and its mid-p."""

    n: int  #: examples both were scored on
    better: int
    worse: int
    p_exact: float
    p_mid: float

    @property
    def significant(self) -> bool:
        """Larger than the noise: McNemar's mid-p below `SIGNIFICANCE`."""
        return self.p_mid < SIGNIFICANCE

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "better": self.better, "worse": self.worse, "p_exact": self.p_exact, "p_mid": self.p_mid}


def mcnemar(better: int, worse: int) -> tuple[float, float]:
    """(exact, mid-p) two-sided p-values of McNemar's test with `better` and `worse` discordant
    pairs: under no difference each discordant pair goes either way with probability 1/2."""
    n = better + worse
    if n == 0:
        return 1.0, 1.0
    k = min(better, worse)
    below = sum(math.comb(n, i) for i in range(k))  # P(X < k) * 2^n
    at = math.comb(n, k)
    exact = min(1.0, 2 * (below + at) / 2**n)
    mid = min(1.0, (2 * below + at) / 2**n)
    return exact, mid


def paired(first: Mapping[str, float], second: Mapping[str, float]) -> Paired:
    """McNemar's test of `second` against `first` (per-example scores keyed by example id) on the
    examples both have."""
    common = first.keys() & second.keys()
    better = sum(second[key] > first[key] for key in common)
    worse = sum(second[key] < first[key] for key in common)
    exact, mid = mcnemar(better, worse)
    return Paired(len(common), better, worse, exact, mid)
