"""A run logged to W&B in offline mode: the run folder W&B writes, read record by record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.tracking.wandb_files import records

pytest.importorskip("wandb")


def test_selftaught_track_backfills_a_run_made_without_tracking_into_an_offline_wandb_run(make_fake_run, fake_stage_runs, tmp_path, monkeypatch):
    run = make_fake_run("untracked", str(tmp_path / "store"), iterations=1)
    fake_stage_runs(run, echo=lambda _: None)  # made before tracking was configured
    document = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    document["spec"]["tracking"] = {"wandb": {"project": "judges", "mode": "offline"}}
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))

    tracked = subprocess.run([sys.executable, "-m", "selftaught", "track", str(run_file)], capture_output=True, text=True, timeout=300)
    assert tracked.returncode == 0, tracked.stdout + tracked.stderr
    assert "wandb: logged 10 item(s)" in tracked.stdout and "everything is logged" in tracked.stdout

    [folder] = (tmp_path / "wandb").glob("offline-run-*")
    [log] = folder.glob("run-*.wandb")
    config, history, artifacts, run_ids = {}, [], {}, set()
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_ids.add(record.run.run_id)
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append({item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        elif kind == "artifact":
            artifacts[record.artifact.type] = (record.artifact.name, json.loads(record.artifact.metadata or "{}"))
    assert run_ids == {folder.name.rsplit("-", 1)[-1]}  # one W&B run, the id the store recorded
    assert config["judge.samples"] == "4" and config["judge.schedule"] == "fitted" and config["run.name"] == "untracked"
    accuracy = {row["iteration"]: row["accuracy"] for row in history if "accuracy" in row}
    assert accuracy == {0: 0.7, 1: 0.7}  # per iteration, the seed's at 0
    assert [row["judge.keepRate"] for row in history if "judge.keepRate" in row] == [0.8]
    assert artifacts["report"][0] == "untracked-report"
    assert artifacts["model"] == ("untracked-judge", {**artifacts["model"][1], "source": "s3://fake/iter-001/train/checkpoint", "iteration": "1"})

    again = subprocess.run([sys.executable, "-m", "selftaught", "track", str(run_file)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "wandb: logged 0 item(s); everything is logged" in again.stdout, again.stdout + again.stderr
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1  # nothing new: no second W&B run
