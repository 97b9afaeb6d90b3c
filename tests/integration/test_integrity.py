"""What a stage published is what a later stage reads, or the run stops and names the damage.

A store copied in part (an interrupted `aws s3 sync`, an rsync cut short) holds files shorter than
their markers promise. Each case runs the real `selftaught run` on a store seeded up to the stage
that reads the damaged file: the run fails permanently (exit 2, `StoreCorrupt`), naming the object,
both figures and the repair, before any model loads — never a score over fewer examples. A copy of
a whole store points at its own checkpoints, not at the store it was copied from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selftaught.api.load import parse_run
from selftaught.errors import StoreCorrupt
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store import open_store
from selftaught.store.layout import PAIRS_HELDOUT, checkpoint_output, manifest_key
from selftaught.store.manifest import Manifest, read_manifest, write_manifest
from tests.conftest import REPO
from tests.stores import publish

STAGES = [StageRef("categorize"), StageRef("select"), StageRef("pairs"), StageRef("evaluate", 0), StageRef("judge", 1), StageRef("train", 1), StageRef("evaluate", 1)]
HELDOUT = [{"id": f"h{i}", "prompt": f"What is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}.", "subset": "default"} for i in range(10)]


def selftaught(*args: object) -> subprocess.CompletedProcess:
    """The command as a user runs it: whatever it says, never a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "selftaught", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "SELFTAUGHT_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def seeded(tmp_path: Path, pending: StageRef, seed: str | None = None):
    """(run file, run, store) of a one-iteration run whose every stage but `pending` is done."""
    document = {
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "copied", "namespace": "tests"},
        "spec": {
            "models": {"seed": {"source": seed or str(tmp_path / "no-model")}},  # never loaded: every error comes first
            "data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}, "evaluation": {"heldOutFraction": 0.2}},
            "storage": {"uri": str(tmp_path / "store")}, "iterations": 1,
        },
    }  # fmt: skip
    path = tmp_path / "run.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    run = parse_run(document)
    store = open_run_store(run)
    accept(store, run)
    for ref in STAGES:
        if ref != pending:
            write_manifest(store, ref.manifest_key, Manifest(stage=ref.name, iteration=ref.iteration))
    publish(store, PAIRS_HELDOUT, HELDOUT)
    return path, run, store


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("cut", ["after 5 of its 10 lines", "in the middle of a line"])
def test_a_held_out_file_cut_short_stops_the_run_naming_it_both_sizes_and_the_repair(tmp_path, cut):
    path, _, store = seeded(tmp_path, StageRef("evaluate", 0))
    heldout = Path(store.url("pairs/heldout.jsonl"))  # tests.stores.publish writes at the stage folder's top
    whole = heldout.read_bytes()
    kept = b"".join(whole.splitlines(keepends=True)[:5]) if cut.startswith("after") else whole[: len(whole) // 2 + 7]
    heldout.write_bytes(kept)

    result = selftaught("run", path)
    assert result.returncode == 2, result.stderr  # permanent: a retry reads the same bytes
    line = error_line(result)
    marker = store.url(manifest_key("pairs"))
    assert line.startswith(f"error: run evaluate-0 failed, reason StoreCorrupt: {heldout}: holds {len(kept)} bytes where its marker {marker} promises {len(whole)}")
    assert f"delete {marker} to run that stage again" in line
    assert read_manifest(store, StageRef("evaluate", 0).manifest_key) is None  # no accuracy over 5 examples


def _publish_checkpoint(store, model: Path) -> tuple[Manifest, str]:
    """train-1's checkpoint as the train stage publishes it: the files with their sizes and checksums."""
    prefix, name = checkpoint_output(1)
    attempt = "attempt-0123456789ab"
    folder = f"{prefix}/{attempt}/{name}"
    manifest = Manifest(stage="train", iteration=1, attempt=attempt, outputs=store.upload_dir(model, folder), summary={"checkpoint": folder})
    write_manifest(store, manifest_key(prefix), manifest)
    return manifest, folder


def test_a_truncated_checkpoint_is_named_before_any_engine_reads_it(tmp_path, tiny_model):
    path, _, store = seeded(tmp_path, StageRef("evaluate", 1), seed=str(tiny_model))
    _, folder = _publish_checkpoint(store, tiny_model)
    weights = Path(store.url(f"{folder}/model.safetensors"))
    size = weights.stat().st_size
    with weights.open("r+b") as handle:
        handle.truncate(size // 2)

    result = selftaught("run", path)
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert f"reason StoreCorrupt: {weights}: holds {size // 2} bytes where its marker {store.url('iter-001/train/_manifest.json')} promises {size}" in line
    assert "SafetensorError" not in result.stderr


def test_a_checkpoint_downloaded_from_s3_is_checked_against_its_checksum(tmp_path, tiny_model, bucket, s3_server, monkeypatch):
    from selftaught.api.spec import ModelSource, Storage
    from selftaught.engines.models import resolve_model

    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "cache"))
    store = open_store(f"{bucket}/runs/tests/copied", endpoint=s3_server)
    _, folder = _publish_checkpoint(store, tiny_model)
    storage = Storage(uri=f"{bucket}/runs", endpoint=s3_server)
    config = (tiny_model / "config.json").read_bytes()
    store.write_bytes(f"{folder}/config.json", config.replace(b"{", b"[", 1))  # same size, other bytes: a damaged copy
    with pytest.raises(StoreCorrupt, match=rf"{folder}/config.json: has sha256 \w+… where its marker .*iter-001/train/_manifest.json promises"):
        resolve_model(ModelSource(source=store.url(folder)), storage)
    assert not list((tmp_path / "cache" / "models").glob("[!.]*"))  # nothing damaged is left in the cache
    store.write_bytes(f"{folder}/config.json", config)
    assert (resolve_model(ModelSource(source=store.url(folder)), storage) / "config.json").read_bytes() == config


def test_a_copied_store_points_at_its_own_checkpoints(tmp_path, tiny_model):
    _, run, store = seeded(tmp_path / "original", StageRef("evaluate", 1), seed=str(tiny_model))
    _, folder = _publish_checkpoint(store, tiny_model)
    assert read_manifest(store, manifest_key("iter-001/train")).summary["checkpoint"] == folder  # store-relative
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "original" / "store", copy)
    shutil.rmtree(tmp_path / "original")  # the copy must not need it

    result = selftaught("status", copy / "tests" / "copied")
    assert result.returncode == 0, result.stderr
    assert str(copy / "tests/copied" / folder) in result.stdout and "original" not in result.stdout

    from selftaught.serve_process import served_from_run

    served = served_from_run(str(copy / "tests" / "copied"), iteration=1)
    assert served.model.source == str(copy / "tests/copied" / folder)
