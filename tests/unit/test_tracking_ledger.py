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


def test_a_missing_client_is_a_failure_the_status_shows_not_a_silent_nothing(tmp_path, monkeypatch):
    """An image without the tracking extra: the run goes on, and the status says why nothing is logged."""
    import builtins

    from selftaught.api.load import parse_run
    from selftaught.views.tracking import sync

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *args, **kwargs)

    run = parse_run({
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "r", "namespace": "t"},
        "spec": {"models": {"seed": {"source": "m/x"}}, "data": {"instructions": {"source": "i.jsonl"}}, "storage": {"uri": str(tmp_path)},
                 "tracking": {"mlflow": {"trackingUri": "http://mlflow:5000"}}},
    })  # fmt: skip
    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    outcome = sync(open_store(str(tmp_path / "t" / "r")), run)
    monkeypatch.undo()
    assert outcome.left == {"mlflow": ["params"]} and "pip install 'selftaught[tracking]'" in outcome.errors["mlflow"]
    [failure] = failures(open_store(str(tmp_path / "t" / "r")))
    assert failure.items == ("params",) and "No module named 'mlflow'" in failure.error
