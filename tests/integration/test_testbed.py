"""The CPU testbed: the Self-Taught loop must make a judge better at a task it cannot do at the
start. A change that breaks learning (a masking bug, a parse bug, a balance bug) fails here.
Slow (builds the testbed's seed and runs three iterations, several minutes on 2 cores):
`pytest -m slow`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selftaught.pipeline.scan import scan
from selftaught.store import LocalStore

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~4 minutes on 2 idle cores, three times that on busy ones
def test_the_loop_lifts_held_out_accuracy_from_chance_without_a_label(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    selftaught = [sys.executable, "-m", "selftaught"]
    subprocess.run([*selftaught, "dev", "testbed", ".selftaught/testbed"], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([*selftaught, "run", "examples/testbed.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    progress = scan(LocalStore(tmp_path / ".selftaught/runs/local/testbed"))
    accuracy = {ref.iteration: m.summary["accuracy"] for ref, m in progress.manifests.items() if ref.name == "evaluate"}
    assert sorted(accuracy) == [0, 1, 2, 3]
    assert accuracy[0] <= 0.6, f"the seed should judge the testbed near chance: {accuracy}"
    assert accuracy[3] - accuracy[0] >= 0.15, f"no lift by iteration 3: {accuracy}"


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~5 minutes on 2 idle cores; 26 beside two other runs (measured)
def test_on_the_hard_world_the_loop_climbs_over_several_iterations(tmp_path):
    """The hard world (docs/testbed.md): the seed also misjudges a third of the pairs, so the
    paper recipe's first iteration stays below the ceiling and the judge keeps climbing after it,
    as the kept judgments read more of those pairs right. Thresholds from the measured runs
    (docs/testbed.md, The hard world: seed 0 gave 0.56, 0.63, 0.63, 0.81, 0.81), with margin."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    selftaught = [sys.executable, "-m", "selftaught"]
    subprocess.run([*selftaught, "dev", "testbed", "--world", "hard", ".selftaught/testbed-hard"], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([*selftaught, "run", "examples/testbed-hard.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    progress = scan(LocalStore(tmp_path / ".selftaught/runs/local/testbed-hard"))
    accuracy = {ref.iteration: m.summary["accuracy"] for ref, m in progress.manifests.items() if ref.name == "evaluate"}
    assert sorted(accuracy) == [0, 1, 2, 3, 4]
    assert accuracy[0] <= 0.6, f"the seed should judge the hard world near chance: {accuracy}"
    assert accuracy[1] <= 0.75, f"iteration 1 should stay below the ceiling on the hard world: {accuracy}"
    assert max(accuracy[i] for i in (2, 3, 4)) - accuracy[1] >= 0.1, f"no climb after iteration 1: {accuracy}"
    assert accuracy[4] - accuracy[0] >= 0.15, f"no lift by iteration 4: {accuracy}"
