"""Which edits to a running `SelfTaughtRun` are safe.

Safe fields change only how or when the remaining stages run; they take effect at the next
stage. Every other field changes what finished stages already produced (their data would no
longer match the spec), so once a run has started such an edit is refused, and the run goes on
with the spec it started with.
"""

from __future__ import annotations

from typing import Any

from selftaught.api.spec import SelfTaughtRunSpec

SAFE_FIELDS: frozenset[str] = frozenset(
    {
        "suspend",
        "iterations",
        "scheduling",
        "retries",
        "generation.parallelism",
        "generation.batchSize",
        "generation.gpuMemoryUtilization",
        "generation.enforceEager",
    }
)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: value}


def _is_safe(path: str) -> bool:
    return any(path == safe or path.startswith(safe + ".") for safe in SAFE_FIELDS)


def unsafe_changes(accepted: SelfTaughtRunSpec, proposed: SelfTaughtRunSpec) -> list[str]:
    """Paths (camelCase, as in the manifest) whose edit cannot apply to a started run."""
    old = _flatten(accepted.model_dump(mode="json", by_alias=True))
    new = _flatten(proposed.model_dump(mode="json", by_alias=True))
    return sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p) and not _is_safe(p))


def merge_safe(accepted: SelfTaughtRunSpec, proposed: SelfTaughtRunSpec) -> SelfTaughtRunSpec:
    """The accepted spec with the proposed values of the safe fields: what the run executes
    when an edit mixes safe and refused changes."""
    data = accepted.model_dump(mode="json", by_alias=True)
    new = proposed.model_dump(mode="json", by_alias=True)
    for path in SAFE_FIELDS:
        head, _, tail = path.partition(".")
        if not tail:
            data[head] = new[head]
        else:
            data[head][tail] = new[head][tail]
    return SelfTaughtRunSpec.model_validate(data)
