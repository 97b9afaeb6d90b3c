"""The GPU check: one command, one GPU, no network, under 8 minutes. It runs the train stage's
rows (`train_throughput.py`: SFT with checkpointing on and off, packing, Liger, compile; DPO; GRPO
with the model's own `generate`; LoRA and QLoRA) beside a bare PyTorch loop, on a 1B and a 3B
Llama shape with random weights, and prints one table: tokens/s, MFU, the ratio to the bare loop,
peak memory against what the memory rule (`engines/memory.py`, the rule `selftaught plan` uses)
predicted. Then the measured training rate as a `spec.estimate` block for this GPU kind. All of
it is written to a file whose path it prints last.

    benchmarks/gpu_check.sh                             # on the GPU machine (installs the carried wheels first)
    python benchmarks/gpu_check.py --shapes tiny        # CPU, CI-sized: every row kind CPU can run

A time budget (`--budget`, whole seconds from the start) bounds it: rows run most important first
(the bare loop and the stage's defaults on both shapes, then the variations), each in its own
process with what is left of the budget at most (`--row-limit`); a row that fails, runs out of
memory or of time is a row with its reason, and the rows the budget never reached say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "operator"))

import train_throughput as rows_of  # noqa: E402  (beside this file)

#: the order rows run in: what the table is for first, the slowest to start (compile) last
PRIORITY = ("bare", "stage", "packed", "unfused", "lora", "qlora", "dpo", "grpo", "checkpointing", "no-checkpointing", "packed+compile")
#: seconds a row needs at the least to be worth starting (a process start, a model load, a few steps)
SHORTEST_ROW = {"gpu": 45.0, "cpu": 20.0}


def estimate_block(kind: str | None, device: str, results: dict[str, dict[str, dict | str]], parameters: dict[str, int], day: str) -> str:
    """The measured rates as a `spec.estimate` block to paste under a run's `spec:`. The training
    rate is what the estimate means by `trainTflops` (docs/cost.md): 6 x parameters per token, x 4/3
    with gradient checkpointing, so the stage row's tokens/s times that, on the largest shape whose
    stage row ran. Decode and prefill are vLLM's, which this check does not run: they keep the kind's
    defaults."""
    lines = [f"# spec.estimate for {device}, measured by benchmarks/gpu_check.py on {day}"]
    measured = [(parameters[shape], shape, rows["stage"]) for shape, rows in results.items() if isinstance(rows.get("stage"), dict)]
    throughput: dict[str, float] = {}
    if measured:
        size, shape, stage = max(measured, key=lambda m: m[0])
        checkpointing = bool(stage.get("checkpointing"))
        throughput["trainTflops"] = float(f"{_as_estimated('stage', size, stage):.4g}")
        lines.append(
            f"# trainTflops: the train stage with plan's defaults on the {shape} shape ({size / 1e9:.3g}B parameters, gradient checkpointing "
            f"{'on' if checkpointing else 'off'}): 6 x parameters x {stage['tokens_per_second']:,.0f} tokens/s"
            + (" x 4/3" if checkpointing else "")
        )
        others = [f"{row} {_as_estimated(row, size, results[shape][row]):.4g}" for row in ("lora", "dpo") if isinstance(results[shape].get(row), dict)]
        if others:
            lines.append(f"# the same shape's other rows, as the estimate counts them (TFLOP/s): {', '.join(others)}")
    else:
        lines.append("# no stage row ran: nothing measured to replace the kind's training rate")
    lines.append("# decodeTflops, prefillTflops: vLLM's, not measured here (no vLLM): the kind's defaults stay")
    if kind is None:
        lines.append(f"# {device} is none of spec.estimate.gpu's kinds: set gpu to the nearest one")
    lines.append("estimate:" if kind is not None or throughput else "estimate: {}")
    if kind is not None:
        lines.append(f"  gpu: {kind}")
    if throughput:
        lines.append("  throughput:")
        lines.extend(f"    {name}: {value:g}" for name, value in throughput.items())
    return "\n".join(lines) + "\n"


def _as_estimated(row: str, parameters: int, result: dict) -> float:
    """TFLOP/s as `views/estimate.py` prices training: 6 (LoRA 4) x parameters a token, x 4/3 with
    checkpointing (DPO's reference forward is not in its arithmetic)."""
    per_token = (4 if row in ("lora", "qlora") else 6) * parameters * (4 / 3 if result.get("checkpointing") else 1)
    return per_token * result["tokens_per_second"] / 1e12


def parse_estimate(block: str):
    """The block as the spec's own model reads it: what a user pasting it gets (or its error)."""
    import yaml

    from selftaught.api.spec import Estimate

    return Estimate.model_validate(yaml.safe_load(block)["estimate"])


def work_order(shapes: list[str], rows: list[str]) -> list[tuple[str, str]]:
    """(shape, row) in the order they run: by row priority, each row on every shape."""
    return [(shape, row) for row in sorted(rows, key=PRIORITY.index) for shape in shapes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=rows_of.SHAPES, default=None, help="default: 1b 3b on a GPU, tiny on CPU")
    parser.add_argument("--rows", nargs="+", choices=rows_of.ROWS, default=list(rows_of.ROWS))
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for everything, from the start (default 450)")
    parser.add_argument("--row-limit", type=float, default=None, help="seconds one row may take at most (default 150 on a GPU, 300 on CPU)")
    parser.add_argument("--length", type=int, default=None, help="tokens per example (default 3970 on a GPU, 128 on CPU)")
    parser.add_argument("--accumulation", type=int, default=None, help="micro batches per optimizer step (default 8 on a GPU, 2 on CPU)")
    parser.add_argument("--completion", type=int, default=None, help="tokens per GRPO rollout (default 128 on a GPU, 16 on CPU)")
    parser.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--out", type=Path, default=None, help="folder of the results file (default $OUT, else .selftaught/gpu-check)")
    args = parser.parse_args()
    started = time.monotonic()
    device = rows_of.device_name()
    gpu = device != "CPU"
    shapes = args.shapes or (["1b", "3b"] if gpu else ["tiny"])
    limit = args.row_limit or (150.0 if gpu else 300.0)
    args.length = args.length or (3970 if gpu else 128)
    args.accumulation = args.accumulation or (8 if gpu else 2)
    args.completion = args.completion or (128 if gpu else 16)
    args.pack, args.warmup = min(4, args.accumulation) * args.length, 1  # a packed micro batch: up to 4 examples
    steps = args.warmup + 2 + (1 + rows_of.StepClock.PROFILED if gpu else 0) + 1  # untimed, timed, profiled, one spare
    args.examples = args.accumulation * steps

    from selftaught.views.estimate import kind_of_device

    kind = kind_of_device(device) if gpu else "cpu"
    peak_measured, how = rows_of.measured_peak_tflops()
    peak = rows_of.PEAK_TFLOPS.get(kind or "", peak_measured) if gpu else peak_measured
    print(f"device: {device} ({kind or 'no spec.estimate.gpu kind'}); peak for MFU {peak:.4g} TFLOP/s "
          f"({'datasheet dense bf16' if gpu and kind in rows_of.PEAK_TFLOPS else 'measured'}); measured {how}: {peak_measured:.4g} TFLOP/s")  # fmt: skip
    print(f"examples of ~{args.length} tokens, {args.accumulation * args.length:,} tokens a step, ZeRO-{args.zero}; budget {args.budget:.0f} s", flush=True)
    results: dict[str, dict[str, dict | str]] = {shape: {} for shape in shapes}
    parameters: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        for shape, row in work_order(shapes, args.rows):
            left = args.budget - (time.monotonic() - started)
            if left < SHORTEST_ROW["gpu" if gpu else "cpu"]:
                results[shape][row] = f"skipped: the time budget ({args.budget:.0f} s) is spent"
                continue
            model = Path(folder) / shape
            if shape not in parameters:
                parameters[shape] = rows_of.build_model(model, shape, args.pack + 128)
            args.shape = shape
            began = time.monotonic()
            results[shape][row] = rows_of.run_row(row, model, rows_of.worker_argv(args), timeout=min(limit, left))
            outcome = results[shape][row]
            said = f"{outcome['tokens_per_second']:,.0f} tokens/s" if isinstance(outcome, dict) else outcome
            print(f"  {shape} {row}: {said} ({time.monotonic() - began:.0f} s)", flush=True)
    for shape in shapes:  # the table in the order of the rows
        results[shape] = {row: results[shape][row] for row in rows_of.ROWS if row in results[shape]}
    table = rows_of.table(results, parameters, peak)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    block = estimate_block(kind, device, results, parameters, day)
    out = args.out or Path(os.environ.get("OUT") or ".selftaught/gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"gpu-check-{(kind or 'gpu').lower()}-{stamp}.json"
    record = {
        "device": device, "kind": kind, "peak_tflops": peak, "peak_measured_tflops": peak_measured, "seconds": time.monotonic() - started,
        "settings": {"length": args.length, "accumulation": args.accumulation, "completion": args.completion, "zero": args.zero, "budget": args.budget},
        "parameters": parameters, "rows": results, "table": table, "estimate": block,
    }  # fmt: skip
    path.write_text(json.dumps(record, indent=1) + "\n")
    path.with_suffix(".md").write_text(f"{device}, {day}\n\n{table}\n\n```yaml\n{block}```\n")
    print(f"\n{table}\n\n{block}\nin {time.monotonic() - started:.0f} s; written to {path} (and {path.with_suffix('.md').name} beside it)")
    parse_estimate(block)  # what we printed is what the spec accepts (else this fails, after the results are safe)


if __name__ == "__main__":
    main()
