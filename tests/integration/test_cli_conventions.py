"""The command line keeps the conventions a newcomer brings from kubectl: every subcommand's
`--help` says what it does, a misspelt field is an unknown field with the one meant, a YAML error
names the file and line, GPU kinds take any case, and JSON (`plan --json`, `status -o json|yaml`)
is camelCase."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from selftaught.cli import build_parser, main
from selftaught.store.failures import FailureRecord, write_failure
from selftaught.store.layout import failure_key

from .test_cli_views import halfway


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stopped:
        main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def commands(parser, prefix=()):
    """Every subcommand, nested ones (`dev tiny-model`) too."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*prefix, name), child
                yield from commands(child, (*prefix, name))


def test_every_subcommands_help_says_what_it_does(capsys):
    found = list(commands(build_parser()))
    assert {"run", "plan", "status", "report", "get", "serve", "judge", "score", "crd", "stage", "operator"} <= {path[0] for path, _ in found}
    code, out, _ = run_main(capsys, "--help")  # the top level lists every command with its help line
    assert code == 0 and all(f"    {path[0]} " in out for path, _ in found if len(path) == 1), out
    for path, parser in found:
        code, out, _ = run_main(capsys, *path, "--help")
        assert code == 0 and parser.description, path
        assert out.split("\n\n")[1].replace("\n", " ").startswith(parser.description.split()[0]), (path, out[:300])


def spec_file(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


RUN = """apiVersion: selftaught.dev/v1alpha1
kind: SelfTaughtRun
metadata: {name: conventions}
spec:
  models: {seed: {source: org/model-8B}}
  data: {instructions: {source: hf://datasets/org/prompts}}
  storage: {uri: s3://bucket/runs}
  estimate: {instructions: 1000}
"""


def test_a_misspelt_field_is_an_unknown_field_with_the_one_meant_and_a_yaml_error_names_file_and_line(tmp_path, capsys):
    path = spec_file(tmp_path, RUN + "  judge: {sample: 4}\n")
    code, out, err = run_main(capsys, "plan", path)
    assert code == 2 and out == ""
    assert err.strip() == f'error: {path}: unknown field "spec.judge.sample" (did you mean "spec.judge.samples"?)'
    broken = spec_file(tmp_path, RUN + "  judge:\n    samples: 4\n   maxTokens: 9\n")
    code, _, err = run_main(capsys, "plan", broken)
    assert code == 2 and err.startswith(f"error: {broken}:11:4: not valid YAML: ") and "<unicode string>" not in err


def test_gpu_kinds_take_any_case_and_plan_json_says_which(tmp_path, capsys):
    code, out, _ = run_main(capsys, "plan", spec_file(tmp_path, RUN), "--gpu", "a100", "--json")
    assert code == 0 and json.loads(out)["gpu"] == "A100"


def test_status_prints_one_json_or_yaml_document_in_camel_case(tmp_path, capsys):
    run, store = halfway(tmp_path)
    judge = "iter-001/judge"
    record = FailureRecord(stage="judge-1", reason="StageCrashed", message="exit code 137", at=time.time(), shard=1, log=f"{judge}/_logs/local-1-shard-00001.log")
    write_failure(store, failure_key(judge, "local-1-shard-00001"), record)
    code, out, _ = run_main(capsys, "status", store.uri, "-o", "json")
    document = json.loads(out)
    assert code == 1 and document["phase"] == "Failed" and (document["stagesDone"], document["stagesTotal"]) == (3, 10)
    assert document["failure"] == {
        "stage": "judge-1", "reason": "StageCrashed", "message": "exit code 137", "permanent": False, "at": record.at,
        "log": store.url(f"{judge}/_logs/local-1-shard-00001.log"),
    }  # fmt: skip
    stages = {stage["stage"]: stage for stage in document["stages"]}
    assert stages["judge-1"]["state"] == "Failed" and stages["categorize"]["summary"]["instructions"] == 50
    assert stages["evaluate-0"]["state"] == "Ready" and stages["train-1"]["state"] == "Waiting"

    def keys(value):
        if isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from keys(item)
        elif isinstance(value, list):
            for item in value:
                yield from keys(item)

    assert not [key for key in keys(document) if "_" in key]
    code, again, _ = run_main(capsys, "status", store.uri, "-o", "yaml")
    assert yaml.safe_load(again)["failure"] == document["failure"]
