"""What Flux (kstatus) concludes from SelfTaughtRun statuses.

The samples are shared with test_argocd_health.py; each carries the kstatus
verdict next to the Argo CD one. The expectations a Flux user has:

  running           -> InProgress  (Reconciling=True)
  suspended         -> InProgress  (kstatus has no "suspended": Reconciling and
                                    Stalled are False, so it falls back to the
                                    Ready condition, and Ready=False means
                                    InProgress -- a Flux health check keeps
                                    waiting, and times out if suspended long)
  succeeded         -> Current     (no Reconciling/Stalled True; Ready=True)
  failed            -> Failed      (Stalled=True)
  stale generation  -> InProgress  (observedGeneration != generation)
  refused edit      -> InProgress  (kstatus never looks at SpecAccepted)
  no status         -> Current     (nothing for kstatus to go on)
"""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from . import kstatus

SAMPLES = sorted((pathlib.Path(__file__).resolve().parent / "samples").glob("*.yaml"))


def load(name: str) -> dict:
    return yaml.safe_load((pathlib.Path(__file__).resolve().parent / "samples" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_kstatus_verdict(sample):
    case = yaml.safe_load(sample.read_text())
    result = kstatus.compute(case["input"])
    assert {"status": result.status, "message": result.message} == case["kstatus"]


@pytest.mark.parametrize("name, expected", [
    ("running", kstatus.IN_PROGRESS),
    ("suspended", kstatus.IN_PROGRESS),
    ("succeeded", kstatus.CURRENT),
    ("failed", kstatus.FAILED),
    ("stale-generation", kstatus.IN_PROGRESS),
])
def test_flux_user_expectations(name, expected):
    assert kstatus.compute(load(name)["input"]).status == expected


def test_suspended_is_in_progress_only_because_of_ready():
    obj = load("suspended")["input"]
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Ready"]
    assert kstatus.compute(obj).status == kstatus.CURRENT


# A few cases straight from the Go rules, to pin the port itself.

def test_deletion_timestamp_wins():
    obj = load("running")["input"]
    obj["metadata"]["deletionTimestamp"] = "2025-01-01T12:00:00Z"
    assert kstatus.compute(obj).status == kstatus.TERMINATING


def test_first_of_reconciling_or_stalled_in_list_order_wins():
    obj = load("failed")["input"]
    conditions = obj["status"]["conditions"]
    reconciling = next(c for c in conditions if c["type"] == "Reconciling")
    reconciling["status"] = "True"
    assert kstatus.compute(obj).status == kstatus.IN_PROGRESS  # Reconciling is listed first
    obj2 = copy.deepcopy(obj)
    obj2["status"]["conditions"].sort(key=lambda c: c["type"] != "Stalled")
    assert kstatus.compute(obj2).status == kstatus.FAILED


def test_reconciling_result_carries_the_condition():
    result = kstatus.compute(load("stale-generation")["input"])
    assert result.conditions == [kstatus.Condition(
        "Reconciling", "True", "LatestGenerationNotObserved", result.message)]


def test_ready_unknown_is_in_progress():
    obj = {"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun",
           "metadata": {"generation": 1},
           "status": {"observedGeneration": 1,
                      "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Pending"}]}}
    assert kstatus.compute(obj) == kstatus.Result(
        kstatus.IN_PROGRESS, "", [kstatus.Condition("Reconciling", "True", "Pending", "")])


def test_non_integer_generation_is_an_error():
    obj = load("running")["input"]
    obj["status"]["observedGeneration"] = "3"
    with pytest.raises(kstatus.KStatusError):
        kstatus.compute(obj)


def test_builtin_kinds_are_not_ported():
    with pytest.raises(NotImplementedError):
        kstatus.compute({"apiVersion": "batch/v1", "kind": "Job", "metadata": {}})
