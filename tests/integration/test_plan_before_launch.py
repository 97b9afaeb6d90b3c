"""`selftaught plan` is right before launch: a typo'd path is one sentence, not an estimate of
nothing; a run kept in a local folder is planned as `selftaught run` runs it; a GPU machine can be
previewed from a laptop; an assumed model size is said on the first line; the stage table is
printed even when the instructions cannot be counted; its JSON is camelCase; and no command
prints a traceback when its reader goes away (`| head`)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import REPO

from .test_cli_views import PAPER, selftaught


def manifest(tmp_path, seed: str, instructions: str, uri: str = "runs") -> str:
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump({
            "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "newcomer", "namespace": "local"},
            "spec": {"models": {"seed": {"source": seed}}, "data": {"instructions": {"source": instructions}}, "storage": {"uri": uri}, "iterations": 1},
        })  # fmt: skip
    )
    return str(path)


def test_a_typo_in_a_path_is_one_sentence_per_path_before_any_number(tmp_path):
    result = selftaught("plan", manifest(tmp_path, "./models/tiny-judgee", "instructionz.jsonl"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: data.instructions.source: {tmp_path / 'instructionz.jsonl'}: no such file or folder",
        f"error: models.seed.source: {tmp_path / 'models/tiny-judgee'}: no such folder (a Hub id is written org/name)",
    ]


def test_a_local_store_is_planned_on_this_machine_and_a_gpu_machine_can_be_previewed(tmp_path, tiny_model):
    (tmp_path / "instructions.jsonl").write_text('{"instruction": "What is 2 + 2?"}\n' * 40)
    run = manifest(tmp_path, str(tiny_model), "instructions.jsonl")
    here = selftaught("plan", run)
    assert here.returncode == 0, here.stderr
    assert here.stdout.splitlines()[0] == "plan of newcomer: 7 stages, on this machine (CPU)"  # as `selftaught run` runs it: no --local needed
    assert "40 instructions (counted in data.instructions.source)" in here.stdout
    preview = selftaught("plan", run, "--local", "--gpus", "8", "--gpu", "h100")  # any case
    first = preview.stdout.splitlines()[0]
    assert first.startswith("plan of newcomer: 7 stages, on a machine with 8 H100 GPUs (a preview: --gpus 8 --gpu H100;"), first
    assert any(line.startswith("train-1      1 node x 8 GPUs") for line in preview.stdout.splitlines())
    assert "GPU H100 (spec.estimate.gpu)" in preview.stdout and "GPU-hours" in preview.stdout
    kind_only = selftaught("plan", run, "--local", "--gpu", "H100")  # on a machine without GPUs: never "this machine (CPU)"
    assert "on a machine with 1 H100 GPU (a preview" in kind_only.stdout.splitlines()[0]
    cluster = selftaught("plan", manifest(tmp_path, str(tiny_model), "instructions.jsonl", uri="s3://bucket/runs"))
    assert "on a cluster" in cluster.stdout.splitlines()[0]
    wrong = selftaught("plan", run, "--gpu", "H101")
    assert wrong.returncode == 2 and "unknown GPU kind 'H101': choose one of H100, H200, B200, A100, L40S, L4, cpu" in wrong.stderr


def test_an_assumed_model_size_is_on_the_first_line_and_unknown_counts_still_show_the_stages(tmp_path):
    result = selftaught("plan", manifest(tmp_path, "my-judge", "hf://datasets/org/prompts"))
    assert result.returncode == 2, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "plan of newcomer: 7 stages, on this machine (CPU); priced for an ASSUMED model size: models.seed 8B (set spec.estimate.seedSize)"
    assert lines[2].split() == ["stage", "runs", "as", "prompt", "tok", "generated", "GPU-h", "time"]
    assert lines[3].split() == ["categorize", "1", "process", "?", "?", "?", "?"] and any(line.startswith("train-1 ") for line in lines)
    told = "no estimate yet: the number of instructions is not counted before launch (no local file): set spec.estimate.instructions (or plan --instructions N)"
    assert told in lines and "unknown: unknown" not in result.stdout


def test_plan_json_is_camel_case_all_the_way_down():
    document = json.loads(selftaught("plan", PAPER, "--json").stdout)

    def keys(value):
        if isinstance(value, dict):
            yield from value
            for item in value.values():
                yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    found = set(keys(document))
    assert {"gpuHours", "samplesPerItem", "generatedTokens", "promptTokens"} <= found and not [key for key in found if "_" in key]


def test_no_traceback_when_the_reader_goes_away():
    for command in (["plan", str(PAPER)], ["crd"], ["--help"]):
        shell = f"{sys.executable} -m selftaught {' '.join(command)} | head -1"
        result = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.stdout.count("\n") == 1 and "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
