"""The local runner on a GPU machine, without a GPU: its processes are real, the machine is made up.

Shard processes run side by side, each seeing only its GPUs, at most one per group; the first to
fail stops the others and is reported with its own reason; a lost lease stops them all; a run
that cannot fit the machine stops before any work. The last test runs a real sharded stage (vLLM's
CPU build) as two concurrent shard processes."""

from __future__ import annotations

import json
import sys
import threading

import boto3
import psutil
import pytest

from selftaught.api.spec import ModelSource, Storage
from selftaught.engines.weights import Weights, weights_of
from selftaught.errors import DoesNotFit, SelftaughtError
from selftaught.local.placement import GiB, Machine
from selftaught.local.runner import StageFailed, _Job, _run_jobs, _run_stage, check_machine
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import read_manifest

REF = StageRef("judge", 1)
RECORD = """
import json, os, sys, time
start = time.time()
time.sleep({seconds})
with open(sys.argv[1], "w") as out:
    json.dump({{"start": start, "end": time.time(), "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}, out)
"""


def _job(tmp_path, shard: int, code: str, *args: str) -> _Job:
    name = f"{REF.label}-shard-{shard}"
    return _Job([sys.executable, "-c", code, *args], tmp_path / f"{name}.log", tmp_path / f"{name}.termination", shard)


def test_shards_run_side_by_side_each_on_its_own_gpus_and_queue_for_a_free_group(tmp_path):
    jobs = [_job(tmp_path, shard, RECORD.format(seconds=0.6), str(tmp_path / f"{shard}.json")) for shard in range(5)]
    _run_jobs(REF, jobs, [("2", "3"), ("5", "6")], {"PATH": "/usr/bin:/bin"}, None)
    records = [json.loads((tmp_path / f"{shard}.json").read_text()) for shard in range(5)]
    assert {r["devices"] for r in records} == {"2,3", "5,6"}
    together = 0
    for a in records:  # never two at once on one group
        overlapping = [b for b in records if b is not a and b["start"] < a["end"] and a["start"] < b["end"]]
        assert all(b["devices"] != a["devices"] for b in overlapping)
        together += bool(overlapping)
    assert together >= 2  # side by side, not one after the other
    assert all((tmp_path / f"judge-1-shard-{shard}.log").exists() for shard in range(5))


def test_a_failed_shard_stops_the_others_and_is_reported_with_its_own_reason(tmp_path):
    sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120); open(sys.argv[1] + '.slept', 'w')"
    failing = (
        "import json, os, sys, time; time.sleep(1); "
        "open(os.environ['SELFTAUGHT_TERMINATION_MESSAGE_PATH'], 'w').write(json.dumps({'reason': 'InvalidInput', 'message': 'line 3: not JSON'})); "
        "sys.exit(3)"
    )
    jobs = [_job(tmp_path, 0, sleeper, str(tmp_path / "pid")), _job(tmp_path, 1, failing), _job(tmp_path, 2, sleeper, str(tmp_path / "never"))]
    with pytest.raises(StageFailed) as error:
        _run_jobs(REF, jobs, [("0",), ("1",)], {"PATH": "/usr/bin:/bin"}, None)
    assert error.value.reason == "InvalidInput"
    assert str(error.value) == f"run judge-1 failed, reason InvalidInput: shard 1: line 3: not JSON (log: {tmp_path / 'judge-1-shard-1.log'})"
    assert not psutil.pid_exists(int((tmp_path / "pid").read_text())) and not (tmp_path / "pid.slept").exists()  # stopped, not waited for
    assert not (tmp_path / "never").exists() and not (tmp_path / "judge-1-shard-2.log").exists()  # the queued shard never started


def test_a_lost_lease_stops_every_shard_process(tmp_path):
    class Lease:
        lost: SelftaughtError | None = None

    lease = Lease()
    sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120); open(sys.argv[1] + '.slept', 'w')"
    jobs = [_job(tmp_path, shard, sleeper, str(tmp_path / f"{shard}.pid")) for shard in range(2)]
    threading.Timer(2.0, lambda: setattr(lease, "lost", SelftaughtError("lease lost to host b"))).start()
    with pytest.raises(SelftaughtError, match="lease lost to host b"):
        _run_jobs(REF, jobs, [("0",), ("1",)], {"PATH": "/usr/bin:/bin"}, lease)
    assert not any(psutil.pid_exists(int((tmp_path / f"{shard}.pid").read_text())) for shard in range(2))


def test_a_run_that_cannot_fit_the_machine_stops_before_any_work_and_says_why(make_run, monkeypatch):
    lines: list[str] = []
    eight = Machine(tuple("01234567"), (80 * GiB,) * 8)
    run = make_run(generation={"tensorParallel": 2, "shards": 8}, train={"gpusPerNode": 8, "nodes": 2})
    check_machine(run, eight, lines.append)  # the tiny model fits anything
    assert lines == ["GPUs 0,1,2,3,4,5,6,7 (80 GiB each): generation runs 4 vLLM process(es) at once on 2 GPU(s) each, training 8 worker(s) (train.nodes × train.gpusPerNode asks for 16)"]
    with pytest.raises(DoesNotFit, match=r"generation.tensorParallel is 2, but 1 GPU is visible here \(3\)"):
        check_machine(run, Machine(("3",), (80 * GiB,)), lines.append)
    monkeypatch.setattr("selftaught.local.runner.weights_of", lambda model, storage: Weights({"BF16": 70_553_706_496}))
    with pytest.raises(DoesNotFit, match=r"\(models.seed\) does not fit this machine's GPUs: at generation.tensorParallel 2 it needs about 78.8 GiB"):
        check_machine(run, eight, lines.append)
    monkeypatch.setattr("selftaught.local.runner.weights_of", lambda model, storage: None)
    check_machine(run, eight, lines.append)
    assert lines[-1].startswith("memory check of models.seed skipped: its size cannot be read without downloading it")
    lines.clear()
    check_machine(run, Machine(), lines.append)  # CPU: nothing to check, nothing said
    assert lines == []


def test_an_s3_checkpoints_weights_come_from_its_shard_index(bucket, s3_server):
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    name = bucket.removeprefix("s3://")
    client.put_object(Bucket=name, Key="judge/config.json", Body=json.dumps({"torch_dtype": "bfloat16"}))
    client.put_object(Bucket=name, Key="judge/model.safetensors.index.json", Body=json.dumps({"metadata": {"total_size": 16_060_522_496}}))
    storage = Storage(uri=bucket, endpoint=s3_server)
    assert weights_of(ModelSource(source=f"{bucket}/judge/"), storage) == Weights({"BF16": 8_030_261_248})
    client.put_object(Bucket=name, Key="single/config.json", Body=b"{}")
    assert weights_of(ModelSource(source=f"{bucket}/single/"), storage) is None  # one file, no index: unknown


def test_a_sharded_stage_runs_as_concurrent_shard_processes_then_reduces(make_run, tmp_path):
    """Real stage processes (vLLM's CPU build ignores the GPUs it is given)."""
    run = make_run(name="side-by-side", generation={"shards": 2})
    logs, scratch = tmp_path / "logs", tmp_path / "scratch"
    logs.mkdir()
    scratch.mkdir()
    _run_stage(run, StageRef("categorize"), logs, scratch, machine=Machine(("0", "1"), (80 * GiB,) * 2))
    store = open_run_store(run)
    manifest = read_manifest(store, StageRef("categorize").manifest_key)
    assert manifest is not None and manifest.summary["instructions"] == 50
    markers = [read_manifest(store, StageRef("categorize").shard_manifest_key(s)) for s in (0, 1)]
    assert markers[0].attempt != markers[1].attempt  # one process each
    assert {p.name for p in logs.iterdir()} >= {"categorize-shard-0.log", "categorize-shard-1.log"}
