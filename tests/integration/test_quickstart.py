"""The README's quickstart, exactly: build the tiny seed, run the example manifest, in ≤ 5 min.
Slow (two iterations, ~2-3 min on 2 cores): `pytest -m slow`."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_quickstart_runs_every_stage_and_finishes_within_five_minutes(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    selftaught = [sys.executable, "-m", "selftaught"]
    subprocess.run([*selftaught, "dev", "tiny-model", ".selftaught/models/tiny-judge"], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([*selftaught, "run", "examples/local-quickstart.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    finished = re.findall(r"\]\s+(\S+)\s+✓", result.stdout)
    assert finished == ["categorize", "select", "pairs", "evaluate-0", "judge-1", "train-1", "evaluate-1", "judge-2", "train-2", "evaluate-2"]
    seconds = float(re.search(r"run finished in ([\d.]+)s", result.stdout).group(1))
    assert seconds <= 300
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s+[12]\s+\d+\s+\d+", line)]
    assert len(rows) == 2 and all(int(row[2]) > 0 for row in rows)  # examples kept in both iterations
    assert (tmp_path / ".selftaught/runs/local/quickstart/iter-002/train/checkpoint/model.safetensors").is_file()
