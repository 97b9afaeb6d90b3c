"""A stand-in for a stage process in operator tests about the cluster, not the method.

The test kubelet runs each Job's real command; with `fake_stages` (conftest) a `python` shim on
the pods' PATH runs this file instead: it reads the run the way a stage does (`SELFTAUGHT_RUN`)
and writes the stage's shard markers and manifest at once, with the numbers the status shows.
A run then takes seconds, and what is tested is what the operator does with Jobs and pods. A
stage told to take its time (FAKE_STAGE_SECONDS) first writes its shards' progress, half done
(FAKE_STAGE_SAVED: with a state saved 4 s before, 30 of its 50 units); told to resume
(FAKE_STAGE_RESUME), a stage that finds its predecessor's progress continues from there and
finishes at once — a stand-in for a pod replaced after a disruption. Told to publish outputs
(FAKE_STAGE_OUTPUTS), a stage writes one output file, listed with its size and sha256 in its
manifest, and says it took an hour: what reuse across runs copies and saves.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

from selftaught.pipeline.launch import read_stage_document
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.stage_process import report_if_finished, track
from selftaught.store.layout import output_key, progress_key
from selftaught.store.manifest import Manifest, write_manifest
from selftaught.store.progress import ProgressRecord, SavedState, read_progress, write_progress

SUMMARIES = {
    "judge": {"tried": 10, "kept": 8, "keepRate": 0.8},
    "train": {"checkpoint": "s3://fake/iter-{iteration:03d}/train/checkpoint"},
    "evaluate": {"accuracy": 0.75, "overall": 0.7},
}
#: what each stage measured: the counts a cost estimate is corrected with
COUNTS = {
    "categorize": {"records": 50, "tokens": 1500},
    "pairs": {"train": 36, "heldout": 9, "tokens": 9000},
    "judge": {"items": 72, "samples": 180, "tokens": 7200, "kept": 70, "training_examples": 70},
    "evaluate": {"examples": 9, "tokens": 400},
}


def delay(stage: str) -> float:
    """FAKE_STAGE_SECONDS: "3" for every stage, or "train=3" (or "categorize=3,judge=5") for some."""
    for setting in os.environ.get("FAKE_STAGE_SECONDS", "0").split(","):
        name, _, seconds = setting.rpartition("=")
        if not name or name == stage:
            return float(seconds)
    return 0.0


#: what a GRPO train stage adds to its summary, and measures as it goes (its progress object)
GRPO_SUMMARY = {"reward": 1.25, "trainAccuracy": 0.625, "curve": [{"step": 1, "reward": 1.0, "correct": 0.5}, {"step": 2, "reward": 1.5, "correct": 0.75}]}
GRPO_PROGRESS = {"reward": 1.5, "accuracy": 0.75}


def summary(stage: str, iteration: int) -> dict:
    """The stage's numbers; each iteration's checkpoint is its own, unless FAKE_CHECKPOINT names
    one real checkpoint (a model a test put in the store) for every iteration to report."""
    numbers = {key: value.format(iteration=iteration) if isinstance(value, str) else value for key, value in SUMMARIES.get(stage, {}).items()}
    if stage == "train" and os.environ.get("FAKE_CHECKPOINT"):
        numbers["checkpoint"] = os.environ["FAKE_CHECKPOINT"]
    return numbers


def main(argv: list[str]) -> int:
    tail = argv[argv.index("stage") + 1 :]  # python -m selftaught stage NAME --iteration=I (also under torchrun)
    name, iteration = tail[0], int(next(a for a in tail if a.startswith("--iteration=")).split("=")[1])
    run = read_stage_document()
    ref = StageRef(name, iteration)  # type: ignore[arg-type]
    store = open_run_store(run)
    shards = run.spec.generation.shards if ref.sharded else 1
    seconds = delay(name)
    grpo = name == "train" and run.spec.train.method == "grpo"
    if seconds and os.environ.get("FAKE_STAGE_RESUME") and read_progress(store, progress_key(ref.prefix, 0)) is not None:
        seconds = 0.0  # a replacement: what is left is done at once
    elif seconds:  # halfway through every shard, 10 s in: 10 s to go
        now, unit = time.time(), "steps" if ref.kind == "training" else "samples"
        saved = SavedState(done=30, at=now - 4, seconds=2.0) if os.environ.get("FAKE_STAGE_SAVED") else None
        for shard in range(shards):
            record = ProgressRecord(stage=ref.label, shard=shard, unit=unit, done=50, total=100, tokens=2000, started_at=now - 10, updated_at=now, saved=saved)
            if grpo:
                record.metrics = dict(GRPO_PROGRESS)
            write_progress(store, progress_key(ref.prefix, shard), record)
    time.sleep(seconds)  # long enough to be evicted, or watched, when a test asks
    if ref.sharded:
        for shard in range(shards):
            write_manifest(store, ref.shard_manifest_key(shard), Manifest(stage=ref.name, iteration=ref.iteration, shard=shard, shards=shards))
    numbers = {**summary(name, iteration), **(GRPO_SUMMARY if grpo else {})}
    if name == "train" and run.spec.train.lora is not None:  # the checkpoint is an adapter of the seed
        numbers["adapterOf"] = run.spec.models.seed.source
    outputs, seconds = {}, 0.1
    if os.environ.get("FAKE_STAGE_OUTPUTS"):  # bytes of this attempt's own, and an hour of stage time
        data = f"{ref.label} of {run.metadata.name}, pid {os.getpid()}\n".encode()
        key = output_key(ref.prefix, f"attempt-{os.getpid()}", "out.jsonl")
        store.write_bytes(key, data)
        outputs, seconds = {key: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "records": 1}}, 3600.0
    manifest = Manifest(stage=ref.name, iteration=ref.iteration, shards=shards, seconds=seconds, counts=COUNTS.get(name, {}), summary=numbers, outputs=outputs)
    write_manifest(store, ref.manifest_key, manifest)
    report_if_finished(run)  # as the real stage process does when it finished the run
    track(run)  # and as it logs what it made to the run's tracking servers
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
