"""A run tracked in a real MLflow server: what a user sees through MLflow's client."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from selftaught.pipeline.runstore import open_run_store

pytest.importorskip("mlflow")
from mlflow import MlflowClient


def _tracked(make_fake_run, bucket, s3_server, server, name, **spec):
    return make_fake_run(name, bucket, s3_server, tracking={"mlflow": {"trackingUri": server.url, "experiment": "quickstart"}, "timeoutSeconds": 5}, **spec)


def _mlflow_run(client, name):
    experiment = client.get_experiment_by_name("quickstart")
    [found] = client.search_runs([experiment.experiment_id], filter_string=f"tags.`selftaught.run` = 'tests/{name}' and attributes.run_name = '{name}'")
    return found


def _steps(client, run_id, metric):
    return {m.step: m.value for m in client.get_metric_history(run_id, metric)}


def test_a_tracked_run_shows_its_spec_figures_accuracy_per_iteration_report_and_best_judge_in_mlflow(make_fake_run, bucket, s3_server, live_mlflow, fake_stage_runs, tmp_path):
    run = _tracked(make_fake_run, bucket, s3_server, live_mlflow, "tracked", iterations=1)
    fake_stage_runs(run, echo=lambda _: None)

    client = MlflowClient(live_mlflow.url)
    found = _mlflow_run(client, "tracked")
    assert found.info.status == "FINISHED"
    params = found.data.params
    assert params["judge.samples"] == "4"  # what the run file says
    assert params["judge.schedule"] == "fitted" and params["train.method"] == "sft"  # what it left to the defaults
    assert params["storage.uri"] == bucket and params["run.name"] == "tracked"
    assert _steps(client, found.info.run_id, "accuracy") == {0: 0.7, 1: 0.7}  # overall, per iteration, the seed's at 0
    assert _steps(client, found.info.run_id, "judge.keepRate") == {1: 0.8}
    assert _steps(client, found.info.run_id, "categorize.tokens") == {0: 1500}
    assert _steps(client, found.info.run_id, "judge.tokensPerSecond") == {1: 7200 / 0.1}
    assert set(_steps(client, found.info.run_id, "judge.gpuHoursMeasured")) == set(_steps(client, found.info.run_id, "judge.gpuHoursEstimated")) == {1}
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)} | {a.path for a in client.list_artifacts(found.info.run_id, "report")}
    assert {"report/index.html", "metrics.json"} <= artifacts
    report = client.download_artifacts(found.info.run_id, "report/index.html")
    assert "tests/tracked" in Path(report).read_text()

    [version] = client.search_model_versions("name='tracked'")
    assert version.source == "s3://fake/iter-001/train/checkpoint" and version.run_id == found.info.run_id  # of equal scores the earliest
    assert version.tags["overall"] == "0.7" and version.tags["iteration"] == "1" and version.tags["seed.overall"] == "0.7"

    from selftaught.cli import main

    with pytest.raises(SystemExit) as exit_status:  # everything was logged: a track logs nothing more, registers nothing twice
        main(["track", str(_run_file(run, tmp_path))])
    assert exit_status.value.code == 0
    assert len(client.search_model_versions("name='tracked'")) == 1


def _run_file(run, folder):
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(run.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return path


@pytest.mark.slow  # a whole run, the server stopped and started again, two commands: 40-140 s on 2 shared cores
def test_a_tracking_server_that_goes_down_mid_run_fails_nothing_and_selftaught_track_logs_what_it_missed(
    make_fake_run, bucket, s3_server, live_mlflow, fake_stage_runs, tmp_path, monkeypatch
):
    run = _tracked(make_fake_run, bucket, s3_server, live_mlflow, "outage", iterations=1)
    store = open_run_store(run)
    monkeypatch.setenv("FAKE_STAGE_SECONDS", "judge=1")

    def stop_after_pairs():  # the server goes down once the run's first stages are logged
        deadline = time.monotonic() + 60
        while not any(key.endswith("logged/stage.pairs.json") for key in store.list("tracking/")) and time.monotonic() < deadline:
            time.sleep(0.05)
        live_mlflow.stop()

    stopper = threading.Thread(target=stop_after_pairs)
    stopper.start()
    result = fake_stage_runs(run, echo=lambda _: None)
    stopper.join()
    assert result is not None  # the run finished

    run_file = _run_file(run, tmp_path)
    status = subprocess.run([sys.executable, "-m", "selftaught", "status", str(run_file)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    [line] = [line for line in status.stdout.splitlines() if line.startswith("tracking:")]
    # iteration 1's stages, the report and the best judge: what was made after the server went down
    assert "MLflow: 6 items not logged" in line and "stage.judge-1" in line and "selftaught track" in line, line

    live_mlflow.start()  # the server is back
    tracked = subprocess.run([sys.executable, "-m", "selftaught", "track", str(run_file)], capture_output=True, text=True, timeout=120)
    assert tracked.returncode == 0, tracked.stdout + tracked.stderr
    assert "everything is logged" in tracked.stdout

    client = MlflowClient(live_mlflow.url)
    found = _mlflow_run(client, "outage")
    assert found.info.status == "FINISHED"
    assert _steps(client, found.info.run_id, "accuracy") == {0: 0.7, 1: 0.7}
    assert _steps(client, found.info.run_id, "judge.keepRate") == {1: 0.8}
    assert {a.path for a in client.list_artifacts(found.info.run_id, "report")} == {"report/index.html"}
    assert [v.source for v in client.search_model_versions("name='outage'")] == ["s3://fake/iter-001/train/checkpoint"]
    status = subprocess.run([sys.executable, "-m", "selftaught", "status", str(run_file)], capture_output=True, text=True, timeout=120)
    assert "tracking:" not in status.stdout


def test_a_train_stages_trainer_logs_its_loss_per_step_into_a_run_nested_in_the_runs_mlflow_run(make_fake_run, tmp_path, live_mlflow, monkeypatch):
    """What a train stage's rank 0 gets (`stage_process.point_trainer_at_tracking`) makes the
    Trainer's own MLflow callback (`report_to`, `engines/training.py`) write the curve."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from selftaught.engines.training import reporting
    from selftaught.views.tracking import sync, training_environment

    run = _tracked(make_fake_run, str(tmp_path / "store"), None, live_mlflow, "curves")
    store = open_run_store(run)
    sync(store, run)  # the run's MLflow run, as the stages before train made it
    for key in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_FLATTEN_PARAMS", "SELFTAUGHT_REPORT_TO"):
        monkeypatch.delenv(key, raising=False)
    for key, value in training_environment(store, run, "train-1").items():
        monkeypatch.setenv(key, value)
    assert reporting() == ["mlflow"]

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    data = [{"input_ids": torch.arange(8) % 32, "labels": torch.arange(8) % 32} for _ in range(12)]
    args = TrainingArguments(str(tmp_path / "work"), per_device_train_batch_size=2, max_steps=6, logging_steps=2, report_to=reporting(), use_cpu=True, save_strategy="no", disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=data).train()

    client = MlflowClient(live_mlflow.url)
    parent = _mlflow_run(client, "curves")
    [child] = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert child.info.run_name == "train-1"
    assert sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss")) == [2, 4, 6]
