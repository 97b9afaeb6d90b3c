"""Python port of kstatus' status computation for custom resources.

kstatus is the library Flux (kustomize-controller / helm-controller health
checks, ``flux`` CLI) and cli-utils appliers use to decide whether an object
is Current, InProgress or Failed. This module ports only the part that applies
to a custom resource such as SelfTaughtRun, statement by statement, from

    kubernetes-sigs/cli-utils @ 5895ad6c17dd06b99c1e5c8af17e2b12a3504fad
    (v0.37.2-76-g5895ad6, 2025-10-21)

    pkg/kstatus/status/status.go   Compute, checkReadyCondition, status names
    pkg/kstatus/status/generic.go  checkGenericProperties, checkGeneration
    pkg/kstatus/status/util.go     newInProgressStatus, newReconcilingCondition,
                                   GetObjectWithConditions (BasicCondition)
    pkg/kstatus/status/core.go     legacyTypes / GetLegacyConditionsFn: only the
                                   lookup; the built-in kinds' rules are not
                                   ported and raise NotImplementedError

plus k8s.io/apimachinery's unstructured.NestedFieldNoCopy / NestedString /
NestedInt64 for the lookups. The Go code returns (result, error); here an
error is a raised KStatusError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# status.go
CONDITION_STALLED = "Stalled"
CONDITION_RECONCILING = "Reconciling"

IN_PROGRESS = "InProgress"
FAILED = "Failed"
CURRENT = "Current"
TERMINATING = "Terminating"
NOT_FOUND = "NotFound"
UNKNOWN = "Unknown"

# core.go legacyTypes keys: kinds with type-specific rules (not ported).
LEGACY_TYPES = frozenset({
    "Service", "Pod", "Secret", "PersistentVolumeClaim", "apps/StatefulSet",
    "apps/DaemonSet", "extensions/DaemonSet", "apps/Deployment",
    "extensions/Deployment", "apps/ReplicaSet", "extensions/ReplicaSet",
    "policy/PodDisruptionBudget", "batch/CronJob", "ConfigMap", "batch/Job",
    "apiextensions.k8s.io/CustomResourceDefinition",
})


class KStatusError(Exception):
    """The error return of the Go functions."""


@dataclass
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass
class Result:
    status: str
    message: str
    conditions: list[Condition] = field(default_factory=list)


# --- k8s.io/apimachinery/pkg/apis/meta/v1/unstructured helpers -------------

_MISSING = object()


def _nested_field_no_copy(obj: dict, *fields: str) -> tuple[Any, bool]:
    val: Any = obj
    for i, f in enumerate(fields):
        if val is None:
            return None, False
        if not isinstance(val, dict):
            raise KStatusError(
                f".{'.'.join(fields[:i + 1])} accessor error: {val!r} is of the "
                f"type {type(val).__name__}, expected map[string]interface{{}}")
        val = val.get(f, _MISSING)
        if val is _MISSING:
            return None, False
    return val, True


def _nested_string(obj: dict, *fields: str) -> tuple[str, bool]:
    val, found = _nested_field_no_copy(obj, *fields)
    if not found:
        return "", False
    if not isinstance(val, str):
        raise KStatusError(f"{'.'.join(fields)} accessor error: {val!r} is not a string")
    return val, True


def _nested_int64(obj: dict, *fields: str) -> tuple[int, bool]:
    val, found = _nested_field_no_copy(obj, *fields)
    if not found:
        return 0, False
    # unstructured objects decoded from the API server hold integers as int64;
    # anything else (a float, a string) is an accessor error in Go.
    if isinstance(val, bool) or not isinstance(val, int):
        raise KStatusError(f"{'.'.join(fields)} accessor error: {val!r} is not an int64")
    return val, True


# --- util.go ---------------------------------------------------------------

def _new_reconciling_condition(reason: str, message: str) -> Condition:
    return Condition(CONDITION_RECONCILING, "True", reason, message)


def _new_in_progress_status(reason: str, message: str) -> Result:
    return Result(IN_PROGRESS, message, [_new_reconciling_condition(reason, message)])


def get_conditions(obj: dict) -> list[Condition]:
    """GetObjectWithConditions: status.conditions as []BasicCondition.

    runtime.DefaultUnstructuredConverter.FromUnstructured drops unknown
    fields, leaves missing ones empty and fails on wrongly typed ones.
    """
    status = obj.get("status")
    if status is None:
        return []
    if not isinstance(status, dict):
        raise KStatusError("status is not an object")
    raw = status.get("conditions")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise KStatusError("status.conditions is not a list")
    out = []
    for c in raw:
        if not isinstance(c, dict):
            raise KStatusError("condition is not an object")
        values = []
        for key in ("type", "status", "reason", "message"):
            v = c.get(key)
            if v is None:
                v = ""
            if not isinstance(v, str):
                raise KStatusError(f"condition {key} is not a string: {v!r}")
            values.append(v)
        out.append(Condition(*values))
    return out


# --- generic.go ------------------------------------------------------------

def check_generic_properties(obj: dict) -> Result | None:
    deletion_timestamp, found = _nested_string(obj, "metadata", "deletionTimestamp")
    if found and deletion_timestamp != "":
        return Result(TERMINATING, "Resource scheduled for deletion", [])

    res = check_generation(obj)
    if res is not None:
        return res

    # The first Reconciling=True or Stalled=True in list order wins.
    for cond in get_conditions(obj):
        if cond.type == CONDITION_RECONCILING and cond.status == "True":
            return _new_in_progress_status(cond.reason, cond.message)
        if cond.type == CONDITION_STALLED and cond.status == "True":
            return Result(FAILED, cond.message,
                          [Condition(CONDITION_STALLED, "True", cond.reason, cond.message)])
    return None


def check_generation(obj: dict) -> Result | None:
    generation, found = _nested_int64(obj, "metadata", "generation")
    if not found:
        return None
    observed_generation, found = _nested_int64(obj, "status", "observedGeneration")
    # A missing observedGeneration skips the check (it is not "stale").
    if found and observed_generation != generation:
        message = (f"{obj.get('kind', '')} generation is {generation}, "
                   f"but latest observed generation is {observed_generation}")
        return Result(IN_PROGRESS, message,
                      [_new_reconciling_condition("LatestGenerationNotObserved", message)])
    return None


# --- status.go -------------------------------------------------------------

def _group_kind_key(obj: dict) -> str:
    api_version = obj.get("apiVersion", "") or ""
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kind = obj.get("kind", "") or ""
    return f"{group}/{kind}" if group else kind


def check_ready_condition(obj: dict) -> Result | None:
    for cond in get_conditions(obj):
        if cond.type != "Ready":
            continue
        if cond.status == "True":
            return Result(CURRENT, "Resource is Ready", [])
        if cond.status in ("False", "Unknown"):
            return _new_in_progress_status(cond.reason, cond.message)
        # any other value: keep looking
    return None


def compute(obj: dict) -> Result:
    """status.Compute for one object (a JSON-like dict)."""
    res = check_generic_properties(obj)
    if res is not None:
        return res

    key = _group_kind_key(obj)
    if key in LEGACY_TYPES:
        raise NotImplementedError(f"kstatus has type-specific rules for {key}; not ported")

    res = check_ready_condition(obj)
    if res is not None:
        return res

    return Result(CURRENT, "Resource is current", [])
