"""Train-stage throughput: tokens/s, MFU and peak memory of the train stage's own code path
(`engines/training.train_sft`: TRL's SFTTrainer on DeepSpeed) against a bare PyTorch loop on the
same tokens, on a randomly initialised model of a given shape and synthetic judge-like examples.

    python benchmarks/train_throughput.py                    # GPU: the 1.1B Llama shape, 3,970-token examples
    python benchmarks/train_throughput.py --shape tiny       # CPU, CI-sized: prints the table, asserts nothing
    python benchmarks/train_throughput.py --shape 8b --length 4000 --examples 64

Rows (each in a fresh process, one GPU or the CPU):
- bare           a bare PyTorch loop: forward, backward, fused AdamW, micro batch 1, no DeepSpeed.
                 The ratio to it is the figure that is comparable across machines.
- checkpointing  the train stage with gradient checkpointing on (the default before it was chosen from memory).
- stage          the train stage as configured by default (checkpointing chosen from memory, padding-free).
- packed         + `train.packing` (sequences of `--pack` tokens).
- packed+fused   + Liger's fused kernels (GPU with liger-kernel only).
- packed+compile + `torch.compile`.

MFU = 6 x parameters x tokens/s over the device's peak (stated: the datasheet's dense bf16 on a
known GPU, and a bf16 matrix product measured here; on CPU the measured fp32 product). The first
`--warmup` optimizer steps (allocation, compilation) are not timed. On a GPU, "busy" is the CUDA
kernels' own time per step (torch.profiler over a few steps): wall minus busy is launch overhead
and host work (CPU: not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

#: shape name -> transformers LlamaConfig fields
SHAPES = {
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=4096),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
}
#: datasheet dense bf16 TFLOP/s (no sparsity)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0}
RESULT = "train-throughput-row: "  # how a row's process hands back its numbers
ROWS = ("bare", "checkpointing", "stage", "packed", "packed+fused", "packed+compile")


def build_model(folder: Path, shape: str, max_positions: int) -> int:
    """A random-init Llama of `shape` with a word-level tokenizer and a chat template; its
    parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fields = SHAPES[shape]
    words = [f"w{i}" for i in range(fields["vocab_size"] - 8)]
    vocab = {token: i for i, token in enumerate(["<s>", "</s>", "<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>", "\n", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <|end|> ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    config = LlamaConfig(**fields, max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def synthetic_records(vocab_size: int, n: int, length: int, seed: int = 0) -> list[dict]:
    """Judge-like examples of about `length` tokens: a long prompt and a judgment of ~10 %."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab_size - 8)]
    judgment = max(8, length // 10)
    prompt = length - judgment - 8  # the template's tokens
    return [
        {
            "messages": [{"role": "user", "content": " ".join(rng.choices(words, k=prompt))}],
            "completion": " ".join(rng.choices(words, k=judgment)),
        }
        for _ in range(n)
    ]


# -- one row, in its own process ------------------------------------------------------------------


class StepClock:
    """Stamps every optimizer step; on a GPU it also profiles two steps after the warm-up for the
    CUDA kernels' own time (those two are then left out of the wall-clock timing)."""

    PROFILED = 2

    def __init__(self, warmup: int):
        import torch

        self.torch, self.warmup, self.stamps = torch, warmup, []
        self.on_gpu = torch.cuda.is_available()
        self.profiler = None
        self.kernel_seconds: float | None = None
        if self.on_gpu:
            from torch.profiler import ProfilerActivity, profile, schedule

            plan = schedule(wait=warmup, warmup=1, active=self.PROFILED, repeat=1)
            self.profiler = profile(activities=[ProfilerActivity.CUDA], schedule=plan, on_trace_ready=self._traced)
            self.profiler.start()

    def _traced(self, prof) -> None:
        self.kernel_seconds = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6 / self.PROFILED

    def step(self, *_: object) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        if self.profiler is not None and len(self.stamps) > 1:
            self.profiler.step()

    def seconds_per_step(self) -> float:
        skip = 1 + self.warmup + (1 + self.PROFILED if self.on_gpu else 0)  # stamps[0] is the start
        timed = self.stamps[skip:]
        if len(timed) < 2:
            raise SystemExit(f"only {len(self.stamps) - 1} steps, {skip - 1} of them untimed: raise --examples")
        return (timed[-1] - timed[0]) / (len(timed) - 1)

    def close(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()


def worker(row: str, model_dir: Path, args: argparse.Namespace) -> dict:
    import torch

    from selftaught.api.spec import Train

    on_gpu = torch.cuda.is_available()
    records = synthetic_records(SHAPES[args.shape]["vocab_size"], args.examples, args.length)
    clock = StepClock(args.warmup)
    if row == "bare":
        tokens, steps = bare_loop(model_dir, records, args, clock)
    else:
        from selftaught.engines.training import train_sft

        # the same tokens per optimizer step in every row: a packed micro batch holds pack/length examples
        accumulation = max(1, args.accumulation * args.length // args.pack) if row.startswith("packed") else args.accumulation

        settings = {
            "zero_stage": args.zero, "micro_batch_size": 1, "gradient_accumulation": accumulation, "epochs": 1.0,
            "warmup_steps": 0, "learning_rate": 1e-5, "max_seq_len": args.pack if row.startswith("packed") else args.length + 64,
            "gradient_checkpointing": True if row == "checkpointing" else None, "packing": row.startswith("packed"),
            "fused_kernels": row == "packed+fused", "compile": row == "packed+compile", "bf16": on_gpu,
        }  # fmt: skip
        with tempfile.TemporaryDirectory() as work:
            numbers = train_sft(model_path=model_dir, records=records, train=Train(**settings), output_dir=Path(work) / "out", work_dir=Path(work) / "trainer", on_step=clock.step)
        tokens, steps = numbers["tokens"], numbers["steps"]
    clock.close()
    per_step = tokens / steps
    seconds = clock.seconds_per_step()
    result = {"row": row, "tokens_per_second": per_step / seconds, "seconds_per_step": seconds, "tokens_per_step": per_step, "steps": steps,
              "kernel_seconds_per_step": clock.kernel_seconds}  # fmt: skip
    if on_gpu:
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def bare_loop(model_dir: Path, records: list[dict], args: argparse.Namespace, clock: StepClock) -> tuple[float, int]:
    """Forward, backward and a fused AdamW step per `accumulation` examples, bf16 weights (fp32 on
    CPU), batch 1: what the arithmetic costs without any framework around it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if on_gpu else torch.float32).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=on_gpu)
    batches = []
    for record in records:
        ids = tokenizer.apply_chat_template([*record["messages"], {"role": "assistant", "content": record["completion"]}], tokenize=True, return_dict=True)["input_ids"]
        batches.append(torch.tensor([ids], device=device))
    tokens = sum(b.shape[1] for b in batches)
    clock.step()
    steps = 0
    for start in range(0, len(batches), args.accumulation):
        for batch in batches[start : start + args.accumulation]:
            model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps += 1
        clock.step()
    return tokens, steps


# -- the table ------------------------------------------------------------------------------------


def measured_peak_tflops() -> tuple[float, str]:
    """A large matrix product's rate here: bf16 on a GPU, fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ a
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 20
        for _ in range(n):
            a @ a
        torch.cuda.synchronize()
        return 2 * 8192**3 * n / (time.perf_counter() - start) / 1e12, "bf16 8192^3 matmul"
    a = torch.randn(2048, 2048)
    a @ a
    best = float("inf")
    for _ in range(5):  # the best of five: a shared CPU is rarely all ours
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e12, "fp32 2048^3 matmul, best of 5"


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"


def _liger_here() -> bool:
    from selftaught.engines.training import liger_available

    return device_name() != "CPU" and liger_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_row(row: str, model_dir: Path, argv: list[str]) -> dict | str:
    if row == "packed+fused" and not _liger_here():
        return "skipped: Liger's kernels need a GPU and liger-kernel"
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env.setdefault("DS_ACCELERATOR", "cuda" if device_name() != "CPU" else "cpu")
    done = subprocess.run([sys.executable, __file__, *argv, "--worker", row, "--model", str(model_dir)], env=env, capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    return (done.stderr.strip().splitlines() or ["no output"])[-1][:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: 1b on a GPU, tiny on CPU")
    parser.add_argument("--length", type=int, default=None, help="tokens per example (default 3970 on a GPU, 256 on CPU)")
    parser.add_argument("--pack", type=int, default=None, help="tokens per packed sequence (default 4 x length)")
    parser.add_argument("--examples", type=int, default=None, help="default 128 on a GPU, 48 on CPU")
    parser.add_argument("--accumulation", type=int, default=8, help="micro batches per optimizer step")
    parser.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps not timed")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = device_name() != "CPU" if args.worker is None else None
    args.shape = args.shape or ("1b" if gpu or args.worker else "tiny")
    args.length = args.length or (3970 if args.shape != "tiny" else 256)
    args.pack = args.pack or 4 * args.length
    args.examples = args.examples or (128 if args.shape != "tiny" else 48)
    if args.worker:
        print(RESULT + json.dumps(worker(args.worker, args.model, args)), flush=True)
        return
    argv = ["--shape", args.shape, "--length", str(args.length), "--pack", str(args.pack), "--examples", str(args.examples),
            "--accumulation", str(args.accumulation), "--zero", str(args.zero), "--warmup", str(args.warmup)]  # fmt: skip
    name = device_name()
    peak_measured, how = measured_peak_tflops()
    kind = next((k for k in PEAK_TFLOPS if k in name), None)
    peak = PEAK_TFLOPS[kind] if kind else peak_measured
    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder) / "model"
        parameters = build_model(model_dir, args.shape, max(args.pack, args.length) + 128)
        print(f"device: {name}; peak for MFU: {peak:.3g} TFLOP/s ({'datasheet dense bf16' if kind else 'measured'}); measured {how}: {peak_measured:.2f} TFLOP/s")
        print(f"model: {args.shape} ({parameters / 1e9:.3f}B parameters), {args.examples} examples of ~{args.length} tokens, "
              f"packed rows of {args.pack}, {args.accumulation * args.length:,} tokens a step, ZeRO-{args.zero}")  # fmt: skip
        results = {row: run_row(row, model_dir, argv) for row in args.rows}
    base = results.get("bare")
    print("\n| row | tokens/s | x bare | MFU | s/step | kernel s/step | tokens/step | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row, result in results.items():
        if isinstance(result, str):
            print(f"| {row} | {result} | | | | | | |")
            continue
        ratio = result["tokens_per_second"] / base["tokens_per_second"] if isinstance(base, dict) else float("nan")
        mfu = 6 * parameters * result["tokens_per_second"] / (peak * 1e12)
        kernels = result.get("kernel_seconds_per_step")
        print(
            f"| {row} | {result['tokens_per_second']:,.0f} | {ratio:.2f} | {mfu:.1%} | {result['seconds_per_step']:.3f} | "
            f"{'-' if kernels is None else f'{kernels:.3f}'} | {result['tokens_per_step']:,.0f} | {result['peak_gib']:.2f} |"
        )
    print(json.dumps({"device": name, "parameters": parameters, "peak_tflops": peak, "rows": results}))


if __name__ == "__main__":
    main()
