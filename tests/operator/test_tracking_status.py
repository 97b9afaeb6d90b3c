"""A run whose tracking server never answers, through the operator (fake stages, which log to it
as the real stage process does after publishing): the run succeeds, and its status and one event
say what was not logged."""

from __future__ import annotations

import re
import socket

import pytest

from selftaught.api.load import parse_run
from selftaught.pipeline.runstore import open_run_store
from selftaught.views.tracking.ledger import failures
from tests.kube import run_operator

from ..conftest import QUICK_SPEC, REPO
from .conftest import HANDLERS, NAMESPACE, run_object
from .test_real_cluster import RUNS, events_of, finished, status_of

pytest.importorskip("mlflow")


def _nobody_listens() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_tracking_server_that_never_answers_fails_no_stage_and_the_status_says_what_was_not_logged(cluster, fake_stages, tmp_path):
    run = parse_run({
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "untracked", "namespace": NAMESPACE},
        "spec": {
            **QUICK_SPEC, "iterations": 1, "evaluate": {**QUICK_SPEC["evaluate"], "baseline": False},
            "models": {"seed": {"source": "selftaught-tests/tiny-judge"}},  # the fake stages load no model
            "data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}, "evaluation": {"heldOutFraction": 0.2}},
            "storage": {"uri": str(tmp_path / "store")},
            "tracking": {"mlflow": {"trackingUri": _nobody_listens()}, "timeoutSeconds": 2},
        },
    })  # fmt: skip
    with run_operator(cluster, HANDLERS, namespace=NAMESPACE):
        cluster.create(RUNS, run_object(run, "untracked"), NAMESPACE)
        status = finished(cluster, "untracked", timeout=120)
        assert status["phase"] == "Succeeded", status
        store = open_run_store(run)
        # the last stage logs after it published: its Job's end brings the status up to date
        status = cluster.wait_for(lambda: "model" in (left := [i for f in failures(store) for i in f.items]) and f"{len(left)} items" in " ".join(status_of(cluster, "untracked").get("tracking") or []) and status_of(cluster, "untracked"), timeout=60)  # fmt: skip
    [line] = status["tracking"]
    assert re.match(r"MLflow: \d+ items not logged \(params, stage\.categorize, stage\.select, stage\.pairs and \d+ more\): ", line), line
    assert "127.0.0.1" in line and "selftaught track" in line
    [failure] = failures(store)  # what the line counts: nothing reached the server
    stages = {"stage.categorize", "stage.select", "stage.pairs", "stage.judge-1", "stage.train-1", "stage.evaluate-1"}
    assert {"params", "model", *stages} <= set(failure.items) and f"{len(failure.items)} items" in line
    told = [e for e in events_of(cluster, "untracked") if e["reason"] == "TrackingFailed"]
    assert len(told) == 1 and told[0]["type"] == "Warning" and told[0]["message"].startswith("MLflow: "), told  # once, not once per stage
