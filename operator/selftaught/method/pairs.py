"""Preference pairs by construction: y_w answers x; y_l answers a similar-but-different x'."""

from __future__ import annotations

from typing import Any

from selftaught.method.parsing import parse_modified_pair
from selftaught.method.selection import priority


def build_pair(record: dict[str, Any], baseline: str, modified_output: str) -> dict[str, Any] | None:
    """The pair record, or None when the model's answer is missing its markers or empty."""
    parsed = parse_modified_pair(modified_output)
    if parsed is None or not baseline.strip():
        return None
    if parsed.response.strip() == baseline.strip():
        return None  # no contrast: the "worse" answer is the same text
    return {
        "id": record["id"],
        "instruction": record["instruction"],
        "category": record.get("category"),
        "chosen": baseline.strip(),
        "rejected": parsed.response,
        "modified_instruction": parsed.modified_instruction,
    }


def is_held_out(example_id: str, seed: int, fraction: float) -> bool:
    """Deterministic split: the same pair lands on the same side on every resume."""
    if fraction <= 0:
        return False
    return priority(seed, f"heldout:{example_id}") < fraction * 2**64


def as_rewardbench(pair: dict[str, Any]) -> dict[str, Any]:
    """RewardBench's columns; the subset of a generated pair is its instruction category."""
    return {
        "id": pair["id"],
        "prompt": pair["instruction"],
        "chosen": pair["chosen"],
        "rejected": pair["rejected"],
        "subset": pair.get("category") or "generated",
    }
