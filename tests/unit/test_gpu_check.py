"""benchmarks/gpu_check.py's pure parts: the MFU arithmetic, the table a person reads, and the
`spec.estimate` block they paste (it must be one the spec accepts, with the rate the estimate means)."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)
rows_of = gpu_check.rows_of

ONE_B = 1_000_000_000


def row(tokens_per_second, checkpointing=False, predicted=20.0):
    """A row's numbers as its process hands them back (the bare loop's, with no prediction, have no rule)."""
    numbers = {"tokens_per_second": tokens_per_second, "seconds_per_step": 1.0, "tokens_per_step": 30000.0, "steps": 7,
               "kernel_seconds_per_step": 0.9, "peak_gib": 21.5}  # fmt: skip
    return numbers if predicted is None else {**numbers, "predicted_gib": predicted, "checkpointing": checkpointing}


def test_mfu_counts_six_parameters_a_token_four_with_lora_and_eight_with_a_reference_model():
    assert rows_of.mfu("stage", ONE_B, 50_000, 1000.0) == pytest.approx(0.30)  # 6e9 x 5e4 = 3e14 of 1e15
    assert rows_of.mfu("lora", ONE_B, 50_000, 1000.0) == pytest.approx(0.20)
    assert rows_of.mfu("dpo", ONE_B, 50_000, 1000.0) == pytest.approx(0.40)
    assert rows_of.mfu("grpo", ONE_B, 50_000, 1000.0) == pytest.approx(0.40)


def test_the_table_has_a_line_per_row_its_ratio_to_the_bare_loop_and_the_rows_that_did_not_run():
    results = {"1b": {"bare": row(40_000, predicted=None), "stage": row(50_000, checkpointing=True), "lora": row(60_000),
                      "qlora": "skipped: needs CUDA (bitsandbytes' 4-bit base)", "dpo": "OOM: torch.OutOfMemoryError: CUDA out of memory"}}  # fmt: skip
    lines = rows_of.table(results, {"1b": ONE_B}, 1000.0).splitlines()
    assert lines[0] == "| shape | row | tokens/s | x bare | MFU | s/step | kernel s/step | tokens/step | peak GiB | rule GiB | checkpointing |"
    assert len(lines) == 2 + 5 and all(line.count("|") == len(rows_of.COLUMNS) + 1 for line in lines)
    assert lines[2] == "| 1b | bare | 40,000 | 1.00 | 24.0% | 1.000 | 0.900 | 30,000 | 21.50 | - | - |"
    assert lines[3] == "| 1b | stage | 50,000 | 1.25 | 30.0% | 1.000 | 0.900 | 30,000 | 21.50 | 20.00 | on |"
    assert lines[4].startswith("| 1b | lora | 60,000 | 1.00 | 24.0% |")  # 4 x parameters a token: the bare loop's arithmetic rate
    assert lines[5] == "| 1b | qlora | skipped: needs CUDA (bitsandbytes' 4-bit base) | | | | | | | | |"
    assert "OOM: torch.OutOfMemoryError" in lines[6]


def test_a_failed_row_says_out_of_memory_first_else_its_last_error():
    assert rows_of.failure("Traceback ...\n  File x\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n").startswith("OOM: ")
    assert rows_of.failure("loading\nValueError: no such row\nwarnings after\n") == "failed: ValueError: no such row"


def test_the_estimate_block_parses_as_spec_estimate_with_the_training_rate_the_estimate_means():
    results = {"1b": {"stage": row(90_000)}, "3b": {"stage": row(30_000, checkpointing=True), "lora": row(45_000, checkpointing=True)}}
    block = gpu_check.estimate_block("H100", "NVIDIA H100 80GB HBM3", results, {"1b": ONE_B, "3b": 3 * ONE_B}, "2027-01-05")
    estimate = gpu_check.parse_estimate(block)
    assert estimate.gpu == "H100"
    # the 3b stage row: 6 x 3e9 x 30,000 tokens/s x 4/3 (checkpointing on, as the estimate counts it)
    assert estimate.throughput.train_tflops == pytest.approx(720.0)
    assert estimate.throughput.decode_tflops is None and estimate.throughput.prefill_tflops is None  # vLLM's: not measured here
    assert "measured by benchmarks/gpu_check.py on 2027-01-05" in block and "(TFLOP/s): lora 720\n" in block


def test_without_a_stage_row_or_a_known_kind_the_block_still_parses_and_says_what_is_missing():
    block = gpu_check.estimate_block(None, "NVIDIA RTX 6000 Ada", {"1b": {"stage": "OOM: ..."}}, {"1b": ONE_B}, "2027-01-05")
    estimate = gpu_check.parse_estimate(block)
    assert estimate.gpu is None and estimate.throughput is None
    assert "no stage row ran" in block and "none of spec.estimate.gpu's kinds" in block


def test_rows_run_most_important_first_on_every_shape():
    order = gpu_check.work_order(["1b", "3b"], ["grpo", "stage", "bare"])
    assert order == [("1b", "bare"), ("3b", "bare"), ("1b", "stage"), ("3b", "stage"), ("1b", "grpo"), ("3b", "grpo")]
    assert set(gpu_check.PRIORITY) == set(rows_of.ROWS)
