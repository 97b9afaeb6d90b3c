"""Logging a run to MLflow through its own client (`MlflowClient`): one MLflow run per
selftaught run, its training curves in a nested run per train stage (the Trainer's own MLflow
callback writes them: `training_environment`), the best judge a model version.

Every call is bounded: MLflow's client reads MLFLOW_HTTP_REQUEST_TIMEOUT and
MLFLOW_HTTP_REQUEST_MAX_RETRIES on each request, set here to `tracking.timeoutSeconds` and no
retry (the next stage to finish is the retry), so a server that is down costs a stage one timeout.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from selftaught.api.spec import MlflowTracking, SelfTaughtRun
from selftaught.store import Store
from selftaught.views.tracking.items import Item
from selftaught.views.tracking.ledger import Ledger

#: the tag that names the selftaught run an MLflow run (or model version) belongs to
RUN_TAG = "selftaught.run"


def bound_requests(timeout: int) -> None:
    """MLflow's client reads these on every request: one try of at most `timeout` seconds."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"


class MlflowBackend:
    name = "mlflow"

    def __init__(self, run: SelfTaughtRun, settings: MlflowTracking, timeout: int) -> None:
        bound_requests(timeout)
        from mlflow import MlflowClient

        self.run = run
        self.settings = settings
        self.timeout = timeout
        self.client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        self.run_id = ""
        self.experiment_id = ""

    @property
    def title(self) -> str:
        return f"{self.run.metadata.namespace}/{self.run.metadata.name}"

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.settings.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.settings.experiment)
        except MlflowException:  # another stage process made it a moment ago
            found = self.client.get_experiment_by_name(self.settings.experiment)
            if found is None:
                raise
            return found.experiment_id

    def open(self, ledger: Ledger, store: Store) -> None:
        """The run's MLflow run: the one the ledger names, else a new one (of two processes that
        make one at once, the one recorded first stays and the other is deleted)."""
        recorded = ledger.remote_run()
        if recorded is None:
            self.experiment_id = self._experiment()
            made = self.client.create_run(self.experiment_id, run_name=self.run.metadata.name, tags={RUN_TAG: self.title, "selftaught.store": store.url()})
            recorded = ledger.claim_run({"runId": made.info.run_id, "experimentId": self.experiment_id})
            if recorded["runId"] != made.info.run_id:
                self.client.delete_run(made.info.run_id)
        self.run_id, self.experiment_id = recorded["runId"], recorded["experimentId"]

    def log(self, item: Item, store: Store) -> dict[str, Any]:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params = [Param(key, value) for key, value in item.params.items()]
        metrics = [Metric(m.name, m.value, now, m.step) for m in item.metrics]
        self.client.log_batch(self.run_id, metrics=metrics, params=params)
        if item.artifacts or item.documents:
            with tempfile.TemporaryDirectory(prefix="selftaught-track-") as scratch:
                for key, path in item.artifacts:
                    local = Path(scratch) / path
                    local.parent.mkdir(parents=True, exist_ok=True)
                    store.download_file(key, local)
                    self.client.log_artifact(self.run_id, str(local), str(Path(path).parent) if "/" in path else None)
                for path, content in item.documents:
                    local = Path(scratch) / path
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text(content)
                    self.client.log_artifact(self.run_id, str(local), str(Path(path).parent) if "/" in path else None)
        details: dict[str, Any] = {}
        if item.model is not None:
            details = self._register(item)
        if item.final:
            self.client.set_terminated(self.run_id, "FINISHED")
        return details

    def _register(self, item: Item) -> dict[str, Any]:
        """A model version of the best judge whose source is its checkpoint in the store. MLflow's
        server takes a local path only inside a run's artifacts, so a local store's checkpoint is a
        tag of the run instead."""
        from mlflow.exceptions import MlflowException

        model = item.model
        assert model is not None
        name = self.settings.registered_model or self.run.metadata.name
        if "://" not in model.source:
            self.client.set_tag(self.run_id, "selftaught.bestCheckpoint", model.source)
            return {"registered": False, "why": "a local checkpoint: MLflow's registry takes a store URI (s3://...)"}
        try:
            self.client.create_registered_model(name, tags={RUN_TAG: self.title})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        for version in self.client.search_model_versions(f"name='{name}' and run_id='{self.run_id}'"):
            if version.source == model.source:  # registered by an earlier try whose record was lost
                return {"registered": name, "version": version.version}
        version = self.client.create_model_version(
            name, model.source, run_id=self.run_id, tags={**model.tags, RUN_TAG: self.title}, await_creation_for=self.timeout
        )
        return {"registered": name, "version": version.version}

    def close(self) -> None:
        pass

    def training_environment(self, label: str) -> dict[str, str]:
        """What points the Trainer's MLflow callback (`report_to: mlflow`) at a run nested in this
        one, named for the train stage: its loss (and a GRPO trainer's reward) per step."""
        child = self.client.create_run(
            self.experiment_id, run_name=label, tags={"mlflow.parentRunId": self.run_id, RUN_TAG: self.title}
        )
        return {
            "MLFLOW_TRACKING_URI": self.settings.tracking_uri,
            "MLFLOW_RUN_ID": child.info.run_id,
            "MLFLOW_EXPERIMENT_NAME": self.settings.experiment,
            "MLFLOW_FLATTEN_PARAMS": "1",
        }
