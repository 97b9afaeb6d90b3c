"""What the local runner gives a stage process besides its command: the DeepSpeed ops torch
compiles on first use are kept per user beside the model cache, so they are built once per
machine, never once per run in its scratch space."""

from __future__ import annotations

from selftaught.local import runner
from selftaught.pipeline.table import StageRef


def test_a_train_stage_builds_its_deepspeed_ops_once_per_machine(make_run, monkeypatch, tmp_path):
    seen: list[dict[str, str]] = []
    monkeypatch.setattr(runner, "_run_jobs", lambda ref, jobs, groups, env, *rest: seen.append(env))
    monkeypatch.setenv("SELFTAUGHT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    run = make_run()
    runner._run_stage(run, StageRef("train", 1), tmp_path / "logs", tmp_path / "scratch")
    assert seen[-1]["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "cache" / "torch_extensions") and seen[-1]["TMPDIR"] == str(tmp_path / "scratch")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))  # a person's own choice stands
    runner._run_stage(run, StageRef("train", 1), tmp_path / "logs", tmp_path / "scratch")
    assert seen[-1]["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "mine")
