"""The README's quickstart, exactly: build the tiny seed, run the example manifest; it prints its
plan first, each stage as it finishes, how long it took, and where its report is, and the report
opens in a real browser with the run's numbers. Slow (two iterations, ~2-3 min on 2 cores):
`pytest -m slow`. How long it takes is the README's figure to keep true, not an assertion here."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import find_browser, load_page
from tests.integration.test_report import CELLS, IMAGES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_quickstart_runs_every_stage_and_reports_the_run(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    selftaught = [sys.executable, "-m", "selftaught"]
    subprocess.run([*selftaught, "dev", "tiny-model", ".selftaught/models/tiny-judge"], cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run([*selftaught, "run", "examples/local-quickstart.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index("plan of quickstart: 10 stages, on this machine (CPU)") < out.index("categorize   ▶")  # the plan comes first
    finished = re.findall(r"\]\s+(\S+)\s+✓", out)
    assert finished == ["categorize", "select", "pairs", "evaluate-0", "judge-1", "train-1", "evaluate-1", "judge-2", "train-2", "evaluate-2"]
    assert re.search(r"\]\s+train-1\s+… \d+\.\d% \(\d+/\d+ steps\)", out), "no progress line while train-1 ran"  # not a terminal: lines
    assert re.search(r"run finished in [\d.]+s", out)
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+[12]\s+\d+\s+\d+", line)]
    assert len(rows) == 2 and all(int(row[2]) > 0 for row in rows)  # examples kept in both iterations
    checkpoint = Path(rows[-1][-1])
    assert checkpoint.is_relative_to(tmp_path / ".selftaught/runs/local/quickstart/iter-002/train") and (checkpoint / "model.safetensors").is_file()

    report = Path(re.search(r"^report: (.+)$", out, re.M).group(1))
    assert report == tmp_path / ".selftaught/runs/local/quickstart/report/index.html"
    if find_browser() is None:
        pytest.skip("the quickstart ran; its report was not opened: no Chromium on this machine (.ci/run installs it)")
    seen = load_page(report, {"images": IMAGES, "cells": CELLS})
    assert len(seen.values["images"]) == 4 and all(i["complete"] and i["width"] > 0 for i in seen.values["images"])
    assert [u for u in seen.requests if not u.startswith(("file://", "data:"))] == []
    shown = {row["iteration"]: row["cells"] for row in seen.values["cells"]}
    for row in rows:  # the summary table's numbers, and the report's
        iteration, tried, kept = int(row[0]), row[1], row[2]
        assert (shown[iteration]["tried"], shown[iteration]["kept"]) == (tried, kept)
        assert shown[iteration]["checkpoint"] == row[-1]
