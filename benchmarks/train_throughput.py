"""Train-stage throughput: tokens/s, MFU and peak memory of the train stage's own code paths
(`engines/training`: TRL's SFT, DPO and GRPO trainers on DeepSpeed, LoRA and QLoRA through PEFT)
against a bare PyTorch loop on the same tokens, on a randomly initialised model of a given shape and
synthetic judge-like examples. `benchmarks/gpu_check.py` runs these rows on two shapes within a time
budget, beside the memory rule's prediction and the rates for `spec.estimate`.

    python benchmarks/train_throughput.py                    # GPU: the 1.1B Llama shape, 3,970-token examples
    python benchmarks/train_throughput.py --shape tiny       # CPU, CI-sized: prints the table, asserts nothing
    python benchmarks/train_throughput.py --shape 3b --rows bare stage packed

Rows (each in a fresh process, one GPU or the CPU):
- bare              a bare PyTorch loop: forward, backward, fused AdamW, micro batch 1, no DeepSpeed.
                    The ratio to it is the figure that is comparable across machines.
- stage             the train stage with the defaults `selftaught plan` chooses: checkpointing from the
                    memory rule, Liger's kernels where a GPU and liger-kernel are, padding-free, no packing.
- checkpointing     the stage with gradient checkpointing on; no-checkpointing: off (may not fit: then
                    the row says so).
- unfused           the stage without Liger's kernels (GPU only: on CPU the stage row is unfused).
- packed            + `train.packing` (sequences of `--pack` tokens); packed+compile: + `torch.compile`.
- lora, qlora       `train.lora` with its defaults (rank 16, every projection); qlora: the 4-bit base (CUDA only).
- dpo               `train.method: dpo` on pairs of judgments (a reference model's forward each step).
- grpo              `train.method: grpo` with the model's own `generate` for its rollouts (no vLLM),
                    groups of 4, `--completion` tokens per sampled judgment.

MFU = model FLOPs x tokens/s over the device's peak (stated: the datasheet's dense bf16 on a known
GPU, and a bf16 matrix product measured here; on CPU the measured fp32 product). Model FLOPs per
token: 6 x parameters (forward and backward), 4 x with LoRA (no gradient of the frozen weights),
8 x for DPO and GRPO (+ the reference model's forward); GRPO's rollouts take time but are not
counted as FLOPs. The first `--warmup` optimizer steps (allocation, compilation) are not timed. On
a GPU, "busy" is the CUDA kernels' own time per step (torch.profiler over a few steps): wall minus
busy is launch overhead and host work (CPU: not measured). A row's process ends once its last step
is timed: the checkpoint it would save is no part of a step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
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
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8, vocab_size=128256,
               tie_word_embeddings=True),  # Llama 3.2 3B
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
}
#: datasheet dense bf16 TFLOP/s (no sparsity), by the GPU kinds of `spec.estimate.gpu`
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
RESULT = "train-throughput-row: "  # how a row's process hands back its numbers
ROWS = ("bare", "stage", "checkpointing", "no-checkpointing", "unfused", "packed", "packed+compile", "lora", "qlora", "dpo", "grpo")
#: model FLOPs per token, in parameters: forward 2, backward 4 (LoRA: 2, no gradient of the frozen
#: weights), plus the reference model's forward (DPO; GRPO with its default KL term)
FLOPS_PER_TOKEN = {"lora": 4, "qlora": 4, "dpo": 8, "grpo": 8}
#: rows that cannot run without CUDA, and why
NEEDS_CUDA = {"unfused": "Liger's kernels never run on CPU: the stage row is unfused here", "qlora": "bitsandbytes' 4-bit base"}
#: the group GRPO's rows sample per prompt
GRPO_GROUP = 4


def flops_per_token(row: str, parameters: int) -> float:
    """The model FLOPs of one trained token of `row` (docstring)."""
    return FLOPS_PER_TOKEN.get(row, 6) * parameters


def mfu(row: str, parameters: int, tokens_per_second: float, peak_tflops: float) -> float:
    """Model FLOPs utilization: the row's model FLOPs per second over the device's peak."""
    return flops_per_token(row, parameters) * tokens_per_second / (peak_tflops * 1e12)


def build_model(folder: Path, shape: str, max_positions: int) -> int:
    """A random-init Llama of `shape` with a word-level tokenizer and a chat template; its
    parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fields = dict(SHAPES[shape])
    tie = fields.pop("tie_word_embeddings", False)
    words = [f"w{i}" for i in range(fields["vocab_size"] - 8)]
    vocab = {token: i for i, token in enumerate(["<s>", "</s>", "<pad>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>", "\n", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <|end|> ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}"
    )
    config = LlamaConfig(**fields, max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=tie)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # a 3B model's random init takes minutes on CPU
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
    """One row: its numbers, printed (`RESULT`) by the process that runs it. A stage row's process
    exits once its last optimizer step is timed, before the trainer saves a checkpoint."""
    import torch

    on_gpu = torch.cuda.is_available()
    records = synthetic_records(SHAPES[args.shape]["vocab_size"], args.examples, args.length)
    clock = StepClock(args.warmup)
    predicted = _spy_on_the_memory_rule()
    if row == "bare":
        tokens, steps = bare_loop(model_dir, records, args, clock)
        clock.close()
        return _numbers(row, tokens / steps, steps, clock, predicted)
    tokens, start = _stage_row(row, model_dir, records, args, on_gpu)

    def on_step(step: int, steps: int) -> None:
        clock.step()
        if step == steps and step > 0:
            clock.close()
            print(RESULT + json.dumps(_numbers(row, tokens(steps), steps, clock, predicted)), flush=True)
            os._exit(0)  # the checkpoint the trainer would now save is no part of a step

    start(on_step)
    raise SystemExit("the trainer stopped before its last step")


def _spy_on_the_memory_rule() -> dict:
    """What the train stage's memory rule (`engines/memory.py`) predicts in this very run: it
    fills a dict as the engine asks the rule whether to checkpoint."""
    from selftaught.engines import memory

    seen: dict = {}
    choose = memory.choose_checkpointing

    def spy(setting, estimate_, gpu_bytes):
        choice = choose(setting, estimate_, gpu_bytes)
        if estimate_ is not None:
            seen.update(predicted_gib=estimate_.total(choice.on) / memory.GIB, checkpointing=choice.on)
        return choice

    memory.choose_checkpointing = spy  # the engine imports it from the module as it prepares
    return seen


def _numbers(row: str, per_step: float, steps: int, clock: StepClock, predicted: dict) -> dict:
    import torch

    seconds = clock.seconds_per_step()
    result = {"row": row, "tokens_per_second": per_step / seconds, "seconds_per_step": seconds, "tokens_per_step": per_step, "steps": steps,
              "kernel_seconds_per_step": clock.kernel_seconds, **predicted}  # fmt: skip
    if torch.cuda.is_available():  # what the allocator held: the rule's margin covers its slack, not the CUDA context
        result["peak_gib"] = torch.cuda.max_memory_reserved() / 2**30
    else:
        result["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def _stage_row(row: str, model_dir: Path, records: list[dict], args: argparse.Namespace, on_gpu: bool):
    """The row's train stage call, not yet started, and how many tokens its steps train (a
    function of the steps in all: known once training starts)."""
    from transformers import AutoTokenizer

    from selftaught.api.spec import Train
    from selftaught.engines import training

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def length(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    packed = row.startswith("packed")
    settings = {
        "zero_stage": args.zero, "micro_batch_size": 1, "gradient_accumulation": args.accumulation, "epochs": 1.0, "warmup_steps": 0,
        "learning_rate": 1e-5, "max_seq_len": args.pack if packed else args.length + 64, "bf16": on_gpu, "packing": packed,
        "compile": row == "packed+compile",
    }  # fmt: skip
    if packed:  # the same tokens per optimizer step in every row: a packed micro batch holds pack/length examples
        settings["gradient_accumulation"] = max(1, args.accumulation * args.length // args.pack)
    if row in ("checkpointing", "no-checkpointing"):
        settings["gradient_checkpointing"] = row == "checkpointing"
    if row == "unfused":
        settings["fused_kernels"] = False
    if row in ("lora", "qlora"):
        settings["lora"] = {"quantize": "nf4" if row == "qlora" else "none"}
    work = Path(tempfile.mkdtemp(prefix=f"throughput-{row}-"))
    where = {"output_dir": work / "out", "work_dir": work / "trainer"}
    if row == "dpo":  # two sequences a pair: half the pairs a step for the same tokens
        settings.update(method="dpo", gradient_accumulation=max(1, args.accumulation // 2))
        half = records[: max(1, len(records) // 2)]
        pairs = [{"messages": r["messages"], "chosen": r["completion"], "rejected": " ".join(reversed(r["completion"].split()))} for r in half]
        total = sum(length([*p["messages"], {"role": "assistant", "content": p[side]}]) for p in pairs for side in ("chosen", "rejected"))
        return (lambda steps: total / steps), lambda on_step: training.train_dpo(model_path=model_dir, records=pairs, train=Train(**settings), on_step=on_step, **where)
    if row == "grpo":
        return _grpo_row(model_dir, records, args, settings, where, tokenizer, length, on_gpu)
    total = sum(length([*r["messages"], {"role": "assistant", "content": r["completion"]}]) for r in records)
    return (lambda steps: total / steps), lambda on_step: training.train_sft(model_path=model_dir, records=records, train=Train(**settings), on_step=on_step, **where)


def _grpo_row(model_dir: Path, records: list[dict], args: argparse.Namespace, settings: dict, where: dict, tokenizer, length, on_gpu: bool):
    """GRPO on the records' prompts, groups of `GRPO_GROUP`, rollouts by the model's own `generate`
    (no vLLM), rewarded at random (the reward's arithmetic is no part of a step's cost). Tokens a
    step: every sampled judgment with its prompt."""
    import random as _random

    from selftaught.api.spec import Train
    from selftaught.engines import training

    clock_steps = args.warmup + 2 + (1 + StepClock.PROFILED if on_gpu else 0)  # untimed, two timed and (GPU) the profiled ones
    settings.update(method="grpo", grpo={"group_size": GRPO_GROUP, "steps": clock_steps, "max_completion_tokens": args.completion})
    rows = [{"prompt": r["messages"]} for r in records]
    prompt = sum(length(r["prompt"]) for r in rows) / len(rows)
    sampled = {"completions": 0, "tokens": 0}
    rng = _random.Random(0)

    def scorer(batch: list[dict], texts: list[str]) -> dict[str, list[float]]:
        sampled["completions"] += len(texts)
        sampled["tokens"] += sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
        return {"right": [float(rng.random() < 0.5) for _ in texts]}

    def tokens(steps: int) -> float:
        completion = sampled["tokens"] / max(1, sampled["completions"])
        return settings["gradient_accumulation"] * (prompt + completion)  # micro batch 1: one judgment a micro batch

    def start(on_step):
        return training.train_grpo(
            model_path=model_dir, rows=rows, scorer=scorer, terms=("right",), weights={"right": 1.0}, rows_per_pair=1,
            max_completion_tokens=args.completion, train=Train(**settings), on_step=on_step, vllm=False, **where,
        )  # fmt: skip

    return tokens, start


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The arguments a row's process gets: the shape's and the data's."""
    return ["--shape", args.shape, "--length", str(args.length), "--pack", str(args.pack), "--examples", str(args.examples),
            "--accumulation", str(args.accumulation), "--zero", str(args.zero), "--warmup", str(args.warmup),
            "--completion", str(args.completion)]  # fmt: skip


def run_row(row: str, model_dir: Path, argv: list[str], timeout: float | None = None) -> dict | str:
    """The row's numbers from a fresh process, or a line that says why there are none (skipped,
    out of memory, timed out, or the error it ended with): one row never stops the others."""
    if row in NEEDS_CUDA and device_name() == "CPU":
        return f"skipped: needs CUDA ({NEEDS_CUDA[row]})"
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env.setdefault("DS_ACCELERATOR", "cuda" if device_name() != "CPU" else "cpu")
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", row, "--model", str(model_dir)]
    # its own process group: a timed-out row's compile workers end with it
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return f"timed out after {timeout:.0f} s (its share of the time budget)"
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    return failure(err)


def failure(stderr: str) -> str:
    """The line a failed row's table cell shows: out of memory said first, else the last error line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line] or lines or ["no output"]
    last = errors[-1]
    return ("OOM: " if "OutOfMemory" in last or "out of memory" in last else "failed: ") + last[:240]


COLUMNS = ("shape", "row", "tokens/s", "x bare", "MFU", "s/step", "kernel s/step", "tokens/step", "peak GiB", "rule GiB", "checkpointing")


def table(results: dict[str, dict[str, dict | str]], parameters: dict[str, int], peak_tflops: float) -> str:
    """One markdown table of every shape's rows (`results[shape][row]`: numbers or why none).
    "x bare" is the row's MFU over the bare loop's on the same shape (for 6 x parameters rows,
    its tokens/s over the loop's); "rule GiB" what `engines/memory.py` predicted for the row."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for shape, rows in results.items():
        bare = rows.get("bare")
        base = mfu("bare", parameters[shape], bare["tokens_per_second"], peak_tflops) if isinstance(bare, dict) else None
        for row, result in rows.items():
            if isinstance(result, str):
                lines.append(f"| {shape} | {row} | {result} |" + " |" * (len(COLUMNS) - 3))
                continue
            used = mfu(row, parameters[shape], result["tokens_per_second"], peak_tflops)
            kernels, predicted = result.get("kernel_seconds_per_step"), result.get("predicted_gib")
            checkpointing = {True: "on", False: "off", None: "-"}[result.get("checkpointing")]
            cells = [
                shape, row, f"{result['tokens_per_second']:,.0f}", "-" if base is None else f"{used / base:.2f}", f"{used:.1%}",
                f"{result['seconds_per_step']:.3f}", "-" if kernels is None else f"{kernels:.3f}", f"{result['tokens_per_step']:,.0f}",
                f"{result['peak_gib']:.2f}", "-" if predicted is None else f"{predicted:.2f}", checkpointing,
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=SHAPES, default=None, help="default: 1b on a GPU, tiny on CPU")
    parser.add_argument("--length", type=int, default=None, help="tokens per example (default 3970 on a GPU, 256 on CPU)")
    parser.add_argument("--pack", type=int, default=None, help="tokens per packed sequence (default 4 x length)")
    parser.add_argument("--examples", type=int, default=None, help="default 128 on a GPU, 48 on CPU")
    parser.add_argument("--accumulation", type=int, default=8, help="micro batches per optimizer step")
    parser.add_argument("--zero", type=int, default=2, choices=(0, 1, 2, 3))
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps not timed")
    parser.add_argument("--completion", type=int, default=None, help="tokens per GRPO rollout (default 128 on a GPU, 16 on CPU)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = device_name() != "CPU" if args.worker is None else None
    args.shape = args.shape or ("1b" if gpu or args.worker else "tiny")
    args.length = args.length or (3970 if args.shape != "tiny" else 256)
    args.pack = args.pack or 4 * args.length
    args.examples = args.examples or (128 if args.shape != "tiny" else 48)
    args.completion = args.completion or (128 if args.shape != "tiny" else 16)
    if args.worker:
        print(RESULT + json.dumps(worker(args.worker, args.model, args)), flush=True)
        return
    argv = worker_argv(args)
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
    print()
    print(table({args.shape: results}, {args.shape: parameters}, peak))
    print(json.dumps({"device": name, "parameters": parameters, "peak_tflops": peak, "rows": results}))

if __name__ == "__main__":
    main()
