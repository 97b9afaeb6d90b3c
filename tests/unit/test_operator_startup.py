"""`selftaught operator` as a process: what it does before Kopf starts watching."""

from __future__ import annotations

import gc
from typing import Any

import kopf
import pytest
from kubernetes import config as kube_config

from selftaught.controller.main import YOUNG_COLLECTION_THRESHOLD, run_operator


def test_the_operator_makes_pythons_full_collections_shorter_and_rarer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's full collections stop every thread for as long as they walk the heap; the imports'
    objects live as long as the process, so the operator freezes them before it starts watching,
    and collects its youngest objects less often."""
    seen: dict[str, Any] = {}

    def not_in_a_pod() -> None:
        raise kube_config.ConfigException("not in a pod")

    monkeypatch.setattr(kube_config, "load_incluster_config", not_in_a_pod)
    monkeypatch.setattr(kube_config, "load_kube_config", lambda: None)
    monkeypatch.setattr(kopf, "run", lambda **options: seen.update(options, frozen=gc.get_freeze_count(), thresholds=gc.get_threshold()))
    thresholds = gc.get_threshold()
    gc.unfreeze()
    try:
        assert run_operator(namespaces=["team-a"], all_namespaces=False) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert seen["namespaces"] == ["team-a"] and seen["standalone"] is True
    assert seen["frozen"] > 10_000  # kopf, kubernetes, pydantic and our own modules at least
    assert seen["thresholds"] == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])  # full collections come less often
