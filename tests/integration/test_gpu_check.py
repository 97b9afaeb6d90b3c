"""benchmarks/gpu_check.py in its CPU form (`--shapes tiny`): every row kind that can run on a CPU
runs through the train stage's own code, the two that need CUDA say so, and what it writes is the
table, the rows and a `spec.estimate` block the spec accepts. It asserts nothing about speed: the
numbers that count come from a GPU."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_the_gpu_check_runs_every_row_kind_on_cpu_and_writes_its_table_rows_and_estimate(tmp_path):
    import gpu_check
    import train_throughput

    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--shapes", "tiny", "--budget", "1700", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "operator")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(tmp_path.glob("gpu-check-cpu-*.json"))
    assert len(written) == 1 and f"written to {written[0]}" in done.stdout
    record = json.loads(written[0].read_text())
    rows = record["rows"]["tiny"]
    assert list(rows) == list(train_throughput.ROWS)
    skipped = {row for row, result in rows.items() if isinstance(result, str)}
    assert skipped == {"unfused", "qlora"} and all(rows[row].startswith("skipped: needs CUDA") for row in skipped), rows
    assert all(result["tokens_per_second"] > 0 and result["steps"] >= 3 for row, result in rows.items() if row not in skipped)
    assert all(rows[row]["predicted_gib"] > 0 for row in rows if row not in skipped | {"bare"})  # the memory rule was asked, and said
    table = [line for line in record["table"].splitlines()[2:]]
    assert [line.split(" | ")[1] for line in table] == list(train_throughput.ROWS) and record["table"] in done.stdout
    estimate = gpu_check.parse_estimate(record["estimate"])
    assert estimate.gpu == "cpu" and estimate.throughput.train_tflops > 0
    assert written[0].with_suffix(".md").read_text().count("| tiny |") == len(train_throughput.ROWS)
