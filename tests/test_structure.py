"""The layers of docs/architecture.md, the contracts that keep stage code and ML libraries out of
the operator and the pipeline core, and the lint rules hold: checked on every test run, so a
change cannot quietly undo them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_every_import_goes_down_the_layers_and_the_operator_loads_no_ml_code():
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "6 kept, 0 broken" in result.stdout


def _lint_a_copy_where(tmp_path, module: str, line: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the package whose `module` (a path under selftaught/) has `line` added."""
    shutil.copytree(REPO / "operator" / "selftaught", tmp_path / "selftaught", ignore=shutil.ignore_patterns("__pycache__"))
    changed = tmp_path / "selftaught" / module
    changed.write_text(changed.read_text() + f"\n{line}\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(tmp_path)}
    )


def test_the_layer_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a copy of the package where a stage imports the planner fails."""
    result = _lint_a_copy_where(tmp_path, "stages/judge.py", "from selftaught.pipeline.planner import plan  # an upward import")
    assert result.returncode != 0 and "selftaught.stages.judge -> selftaught.pipeline.planner" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "chain"),
    [
        # the layers allow a downward import from controller/ to stages/; the forbidden contract does not
        ("controller/jobs.py", "from selftaught.stages import budget", "selftaught.controller.jobs -> selftaught.stages.budget"),
        ("pipeline/planner.py", "import torch", "selftaught.pipeline.planner -> torch"),
        # an ML library reached through a view the operator shows is caught too
        ("views/live.py", "import matplotlib", "selftaught.views.live -> matplotlib"),
        # a tracking client anywhere but views/tracking (the stage process reaches it only through there)
        ("stage_process.py", "import mlflow", "selftaught.stage_process -> mlflow"),
    ],
)
def test_the_forbidden_contracts_catch_stage_code_and_ml_libraries_in_the_operator_and_the_core(tmp_path, module, line, chain):
    """Neither forbidden contract is vacuous: a copy where the operator or the core reaches stage
    code or an ML library, directly or through a module it imports, fails."""
    result = _lint_a_copy_where(tmp_path, module, line)
    assert result.returncode != 0 and chain in result.stdout, result.stdout[-3000:]


def test_ruff_finds_nothing():
    result = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-4000:]
