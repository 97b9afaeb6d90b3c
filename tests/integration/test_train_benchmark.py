"""benchmarks/train_throughput.py keeps working in its CPU form (it asserts nothing about speed:
the numbers that count come from a GPU)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_train_throughput_benchmark_prints_its_table_on_cpu():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/train_throughput.py"), "--shape", "tiny", "--examples", "32", "--length", "128",
         "--rows", "bare", "stage", "packed", "unfused"],
        capture_output=True, text=True, timeout=900, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [" | ".join(line.split(" | ")[:2]) for line in table[2:]] == ["| tiny | bare", "| tiny | stage", "| tiny | packed", "| tiny | unfused"]
    assert "skipped: needs CUDA" in table[-1]
    rows = json.loads(done.stdout.splitlines()[-1])["rows"]
    assert all(rows[name]["tokens_per_second"] > 0 and rows[name]["steps"] >= 3 for name in ("bare", "stage", "packed"))
