"""The layers of docs/architecture.md and the lint rules hold: checked on every test run, so a
change cannot quietly undo them."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_every_import_goes_down_the_layers_and_the_operator_loads_no_ml_code():
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_the_layer_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a copy of the package where a stage imports the planner fails."""
    shutil.copytree(REPO / "operator" / "selftaught", tmp_path / "selftaught", ignore=shutil.ignore_patterns("__pycache__"))
    judge = tmp_path / "selftaught" / "stages" / "judge.py"
    judge.write_text(judge.read_text() + "\nfrom selftaught.pipeline.planner import plan  # an upward import\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(tmp_path)}
    )
    assert result.returncode != 0 and "selftaught.stages.judge -> selftaught.pipeline.planner" in result.stdout


def test_ruff_finds_nothing():
    result = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-4000:]
