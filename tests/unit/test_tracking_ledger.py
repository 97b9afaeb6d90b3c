"""The tracking ledger and items, on a local store: what the status says is not logged, and the
spec as parameters."""

from __future__ import annotations

from selftaught.store import open_store
from selftaught.views.tracking.items import flatten
from selftaught.views.tracking.ledger import Ledger, describe, failures


def test_an_item_logged_after_a_failure_is_no_longer_said_to_be_missing(tmp_path):
    store = open_store(str(tmp_path))
    ledger = Ledger(store, "mlflow", {"trackingUri": "http://mlflow:5000", "experiment": "judges"})
    ledger.record("params")
    ledger.fail(["stage.judge-1", "report", "model"], "MlflowException: connection refused")
    ledger.record("stage.judge-1")  # another stage process got it through a moment later
    [failure] = failures(store)
    assert failure.items == ("report", "model")
    assert describe(failure).startswith("MLflow: 2 items not logged (report, model): MlflowException: connection refused;")
    ledger.record("report"), ledger.record("model")
    assert failures(store) == [] and ledger.logged() == {"params", "stage.judge-1", "report", "model"}


def test_another_server_or_experiment_is_a_ledger_of_its_own_and_one_server_run_is_kept(tmp_path):
    store = open_store(str(tmp_path))
    first = Ledger(store, "mlflow", {"trackingUri": "http://a:5000", "experiment": "judges"})
    first.record("params")
    assert Ledger(store, "mlflow", {"trackingUri": "http://b:5000", "experiment": "judges"}).logged() == set()
    assert first.claim_run({"runId": "one", "experimentId": "1"})["runId"] == "one"
    assert first.claim_run({"runId": "two", "experimentId": "1"})["runId"] == "one"  # the one recorded first stays


def test_the_spec_flattens_to_dotted_parameters_without_unset_fields():
    assert flatten({"judge": {"samples": 8, "maxTokens": None}, "select": {"categories": ["code", "math"]}}) == {
        "judge.samples": "8",
        "select.categories": '["code", "math"]',
    }
