"""Getting the judge out: `selftaught get` copies a finished run's checkpoint, metrics, report and
stage logs out of its store, local or S3, resolving the attempt each stage's manifest names; the
install guide's layout is the store's; `selftaught report` of a run that never started says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from selftaught.pipeline.runstore import accept
from selftaught.store import open_store
from selftaught.store.layout import (
    PAIRS_HELDOUT,
    PAIRS_TRAIN,
    REPORT,
    SELECTED,
    checkpoint_output,
    judged_output,
    log_key,
    metrics_output,
    output_key,
    sft_output,
    shard_name,
)
from selftaught.store.manifest import read_manifest, write_manifest
from tests.conftest import REPO

from .test_cli_views import selftaught
from .test_report import EVALUATIONS, STAGES, finished_run


def published_run(tmp_path: Path):
    """A finished two-iteration run as its stages leave it: every output under the attempt that
    won (the real layout functions), the manifest naming it, and a log per stage process."""
    run, store = finished_run(tmp_path)
    accept(store, run)
    for ref, *_ in STAGES:
        attempt = f"attempt-{ref.label.replace('-', '')}0f"
        store.delete_prefix(f"{ref.prefix}/metrics.json")  # finished_run's outputs predate attempts
        outputs = {
            "categorize": [(ref.prefix, shard_name(0))],
            "select": [SELECTED],
            "pairs": [PAIRS_TRAIN, PAIRS_HELDOUT],
            "judge": [sft_output(ref.iteration), judged_output(ref.iteration)],
            "evaluate": [metrics_output(ref.iteration)],
        }.get(ref.name, [])
        for prefix, name in outputs:
            body = json.dumps(EVALUATIONS[ref.iteration][0]) if ref.name == "evaluate" else '{"id": "x"}\n'
            store.write_text(output_key(prefix, attempt, name), body)
        if ref.name == "train":
            checkpoint = output_key(*_attempted(checkpoint_output(ref.iteration), attempt))
            store.write_text(f"{checkpoint}/config.json", json.dumps({"iteration": ref.iteration}))
            store.write_bytes(f"{checkpoint}/model.safetensors", bytes(64))
        write_manifest(store, ref.manifest_key, read_manifest(store, ref.manifest_key).model_copy(update={"attempt": attempt}))
        store.write_text(log_key(ref.prefix, "local-1000"), f"{ref.label}: its log\n")
    store.write_text(REPORT, "<html>the report</html>")
    return run, store


def _attempted(output: tuple[str, str], attempt: str) -> tuple[str, str, str]:
    prefix, name = output
    return prefix, attempt, name


def test_get_copies_the_best_judge_its_metrics_the_report_and_the_logs_through_the_published_attempt(tmp_path):
    run, store = published_run(tmp_path)
    out = tmp_path / "out"

    best = selftaught("get", "checkpoint", store.uri, "-o", out)
    assert best.returncode == 0, best.stderr
    checkpoint = out / "quickstart/iter-002/checkpoint"  # iteration 2: 10/10 held-out pairs, the best
    assert best.stdout.strip() == str(checkpoint) and json.loads((checkpoint / "config.json").read_text()) == {"iteration": 2}
    assert (checkpoint / "model.safetensors").stat().st_size == 64
    assert f"the checkpoint of iteration 2 ({store.uri}/iter-002/train/attempt-train20f/checkpoint)" in best.stderr
    first = selftaught("get", "checkpoint", store.uri, "--iteration", "1", "-o", out)
    assert first.stdout.strip() == str(out / "quickstart/iter-001/checkpoint")

    metrics = selftaught("get", "metrics", store.uri, "-o", out)
    assert metrics.stdout.split() == [str(out / f"quickstart/iter-00{i}/metrics.json") for i in (0, 1, 2)]
    assert json.loads((out / "quickstart/iter-002/metrics.json").read_text()) == EVALUATIONS[2][0]
    assert selftaught("get", "metrics", store.uri, "--iteration", "best", "-o", tmp_path / "b").stdout.split() == [
        str(tmp_path / "b/quickstart/iter-002/metrics.json")
    ]

    report = selftaught("get", "report", store.uri, "-o", out)
    assert (out / "quickstart/report/index.html").read_text() == "<html>the report</html>" and report.returncode == 0
    logs = selftaught("get", "logs", store.uri, "--stage", "judge-1", "-o", out)
    assert logs.stdout.strip() == str(out / "quickstart/iter-001/judge/logs")
    assert (out / "quickstart/iter-001/judge/logs/local-1000.log").read_text() == "judge-1: its log\n"

    seed = selftaught("get", "checkpoint", store.uri, "--iteration", "0")
    assert seed.returncode == 2 and "iteration 0 is the seed, tiny-judge" in seed.stderr


def test_get_reads_an_s3_store_too(tmp_path, bucket, s3_server):
    run, store = published_run(tmp_path)
    s3 = open_store(f"{bucket}/local/quickstart", endpoint=s3_server)
    for key in store.list(""):
        s3.write_bytes(key, store.read_bytes(key))
    result = selftaught("get", "checkpoint", s3.uri, "--endpoint", s3_server, "-o", tmp_path / "from-s3")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "from-s3/quickstart/iter-002/checkpoint/config.json").read_text()) == {"iteration": 2}


def test_the_install_guides_layout_is_the_stores(tmp_path):
    run, store = published_run(tmp_path)
    keys = store.list("")
    guide = (REPO / "docs/install.md").read_text()
    block = guide.split("<!-- the store's layout", 1)[1].split("```", 2)[1]
    paths = [line.split()[0] for line in block.strip().splitlines()]
    assert len(paths) >= 10
    for path in paths:
        pattern = re.escape(path).replace(re.escape("<id>"), r"[0-9a-z]+").replace(re.escape("<ms>"), r"\d+")
        assert any(re.fullmatch(pattern + (".+" if path.endswith("/") else ""), key) for key in keys), f"{path}: not in a finished run's store"


def test_report_of_a_run_that_never_started_says_so_and_makes_no_folder(tmp_path):
    manifest = tmp_path / "run.yaml"
    manifest.write_text(
        yaml.safe_dump({
            "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "never"},
            "spec": {"models": {"seed": {"source": "org/model"}}, "data": {"instructions": {"source": "i.jsonl"}}, "storage": {"uri": "runs"}},
        })  # fmt: skip
    )
    for command in ("report", "get"):
        result = selftaught(command, *(["checkpoint"] if command == "get" else []), manifest)
        assert result.returncode == 2 and "run default/never has not started here" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()
