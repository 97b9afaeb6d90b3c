"""Reuse across runs and `selftaught compare`, through the real local runner and command line, with
stand-in stage processes (`reuse_stage.py`) that write each stage's outputs in a moment."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from selftaught.cli import main
from selftaught.local import runner
from selftaught.local.runner import run_local
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import read_manifest

STAND_IN = Path(__file__).with_name("reuse_stage.py")
SHARED = ("categorize", "select", "pairs", "evaluate-0")  # a judge and a training recipe of their own: nothing else


@pytest.fixture
def tiny_model(tmp_path):
    """The stand-in stages load no model: a folder that is one, by its files, is enough (and
    spares these tests the build of the real tiny model)."""
    folder = tmp_path / "seed"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


@pytest.fixture
def stand_in_stages(monkeypatch):
    monkeypatch.setattr(runner, "stage_command", lambda spec, ref, **_: [sys.executable, str(STAND_IN), ref.name, f"--iteration={ref.iteration}"])


def _two_runs(make_run, tmp_path):
    first = make_run(name="recipe-a", reuse={"enabled": True})
    second = make_run(name="recipe-b", reuse={"enabled": True}, judge={"samples": 6}, train={"learningRate": 2e-4})
    ran = run_local(first, echo=lambda _: None, log_dir=tmp_path / "logs-a")
    lines: list[str] = []
    reused = run_local(second, echo=lines.append, log_dir=tmp_path / "logs-b")
    return first, second, ran, reused, lines


def test_a_second_recipe_links_categories_selection_and_pairs_instead_of_generating_them(make_run, stand_in_stages, tmp_path):
    first, second, ran, result, lines = _two_runs(make_run, tmp_path)
    assert set(ran.stages_run) == {"categorize", "select", "pairs", "evaluate-0", "judge-1", "train-1", "evaluate-1"}
    assert set(result.stages_reused) == set(SHARED) and set(result.stages_run) == {"judge-1", "train-1", "evaluate-1"}
    logs = {path.stem for path in (tmp_path / "logs-b").glob("*.log")}  # one per stage process the runner started
    assert logs == {"judge-1", "train-1", "evaluate-1"}
    source, target = open_run_store(first), open_run_store(second)
    for label in SHARED:
        ref = StageRef.parse(label)
        manifest = read_manifest(target, ref.manifest_key)
        assert manifest.reused["from"] == source.url() and len(manifest.reused["key"]) == 64
        for key in manifest.outputs:  # the very bytes: hard links to the first run's files
            assert Path(target.url(key)).read_bytes() == Path(source.url(key)).read_bytes()
            assert os.path.samefile(target.url(key), source.url(key))
    printed = "\n".join(lines)
    assert "reuse: 4 stage(s) linked from earlier runs" in printed  # the plan before the first stage
    assert f"categorize   ↺ reused from {source.url()}" in printed
    # the second run read the linked pairs like its own: its judge's output names them
    judged = read_manifest(target, StageRef("judge", 1).manifest_key)
    body = json.loads(Path(target.url(next(iter(judged.outputs)))).read_text())
    assert [key for key, _ in body["upstream"]["pairs"]] == list(read_manifest(source, StageRef("pairs").manifest_key).outputs)


def test_the_plan_and_the_status_say_which_stages_are_reused_and_compare_puts_the_runs_side_by_side(make_run, stand_in_stages, tmp_path, capsys):
    first, second, *_ = _two_runs(make_run, tmp_path)
    third = make_run(name="recipe-b-again", reuse={"enabled": True}, judge={"samples": 6}, train={"learningRate": 2e-4})
    manifest = tmp_path / "again.yaml"
    manifest.write_text(yaml.safe_dump(third.model_dump(mode="json", by_alias=True, exclude_none=True)))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(manifest)])
    plan = capsys.readouterr().out
    assert exit_.value.code == 0, plan
    assert "reuse: 7 stage(s) linked from earlier runs" in plan  # everything: the second run published what it ran
    assert plan.count("reused") >= 7

    store_b = open_run_store(second)
    with pytest.raises(SystemExit):
        main(["status", store_b.url()])
    status = capsys.readouterr().out
    assert "↺ pairs" in status and "reused from" in status and "judge-1" in status

    page = tmp_path / "out" / "compare.html"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", open_run_store(first).url(), store_b.url(), "--html", str(page)])
    table = capsys.readouterr().out
    assert exit_.value.code == 0, table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip()}
    assert rows["train.learningRate"] == ["0.0001", "0.0002"] and rows["judge.samples"] == ["4", "6"]
    assert "storage.uri" not in rows and "pairs.maxTokens" not in rows  # only what differs, only the recipe
    assert "iteration 1 accuracy" in table and "0.60 [0.40, 0.90] n=20" in table and "0.65 [0.40, 0.90] n=20" in table
    assert "GPU-hours" in table and "reused)" in table
    html = page.read_text()
    assert "tests/recipe-a" in html and "tests/recipe-b" in html and "data:image/png;base64," in html
