"""How an accuracy is written on a screen: two decimals, its 95 % interval beside it, its n where the
line does not already say it (`0.90 [0.60, 0.98]`, n = 10). The numbers themselves, at full
precision, are in the store (`metrics.json`, the stage's manifest); `method/intervals.py` makes
the intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: the keys of an evaluate stage's summary that are fractions with an interval (`<key>Interval`)
FRACTIONS = ("accuracy", "overall", "custom", "positionConsistent", "orderA", "orderB", "bothOrders", "majorityVote")


def fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ends(interval: Sequence[float] | Mapping[str, Any] | None) -> tuple[float, float] | None:
    if not interval:
        return None
    if isinstance(interval, Mapping):
        return float(interval["low"]), float(interval["high"])
    low, high = interval
    return float(low), float(high)


def estimate(value: float | None, interval: Sequence[float] | Mapping[str, Any] | None = None, n: int | None = None) -> str:
    """`0.90 [0.60, 0.98]`, with ` n=10` when `n` is given; `-` for no value."""
    if value is None:
        return "-"
    ends = _ends(interval)
    text = fraction(value) + (f" [{ends[0]:.2f}, {ends[1]:.2f}]" if ends else "")
    return text + (f" n={n}" if n is not None else "")


def summary_text(summary: Mapping[str, Any]) -> str:
    """A finished stage's summary in one line (`selftaught run`, `selftaught status`): `key value`
    pairs, an evaluation's fractions with their intervals at two decimals; lists (a training curve)
    are the report's."""
    parts = []
    for key, value in summary.items():
        if key in FRACTIONS and isinstance(value, int | float):
            parts.append(f"{key} {estimate(value, summary.get(f'{key}Interval'))}")
        elif not isinstance(value, list | dict):
            parts.append(f"{key} {value}")
    return ", ".join(parts)
