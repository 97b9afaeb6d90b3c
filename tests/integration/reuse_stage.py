"""A stand-in stage process for the reuse tests: what `selftaught stage NAME --iteration=I` would
write, in seconds and without a model. It publishes one output per stage, derived from the fields
the stage reads and from the outputs it reads (so a stage linked from another run, had it run here,
would have written the same bytes), a checkpoint folder for a train stage, and the manifest that
marks it done, with the figures every reader checks."""

from __future__ import annotations

import hashlib
import json
import os
import sys

from selftaught.pipeline.launch import read_stage_document
from selftaught.pipeline.lineage import fields_read
from selftaught.pipeline.planner import stage_graph
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.layout import output_key
from selftaught.store.manifest import Manifest, create_manifest, read_manifest


def main(argv: list[str]) -> int:
    name, iteration = argv[0], int(argv[1].split("=")[1])
    run = read_stage_document()
    ref = StageRef(name, iteration)  # type: ignore[arg-type]
    store = open_run_store(run)
    needs = next(node.needs for node in stage_graph(run.spec) if node.ref == ref)
    upstream = {need.label: sorted(read_manifest(store, need.manifest_key).outputs.items()) for need in needs}
    attempt = f"attempt-{os.getpid()}"
    body = json.dumps({"stage": ref.label, "fields": fields_read(run.spec, name), "upstream": upstream}, sort_keys=True, default=str)
    files = {"out.jsonl": (body + "\n").encode()}
    if name == "train":
        files |= {"checkpoint/config.json": b'{"model_type": "llama"}\n', "checkpoint/model.safetensors": hashlib.sha256(body.encode()).digest() * 64}
    outputs = {}
    for file, data in files.items():
        key = output_key(ref.prefix, attempt, file)
        store.write_bytes(key, data)
        outputs[key] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), **({"records": 1} if file.endswith(".jsonl") else {})}
    summary = {"checkpoint": output_key(ref.prefix, attempt, "checkpoint")} if name == "train" else {}
    if name == "evaluate":
        summary = {"accuracy": 0.5 + 0.1 * iteration + (0.05 if run.spec.train.learning_rate > 1e-4 else 0.0), "accuracyInterval": [0.4, 0.9], "examples": 20}
    manifest = Manifest(stage=name, iteration=iteration, attempt=attempt, outputs=outputs, seconds=3600.0, summary=summary, counts={"records": 1})
    create_manifest(store, ref.manifest_key, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
