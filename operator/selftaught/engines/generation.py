"""Generation through vLLM: one `LLM` per stage process, batched `chat` over the whole shard,
`SamplingParams(n=...)` for multiple samples, prefix caching on (the judge prompt's long system
message is shared by every request). A LoRA judge (`train.lora`) is its base loaded once with
vLLM's LoRA support and every request sent with its adapter (`LoRARequest`), never merged."""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path

from selftaught.api.spec import Generation
from selftaught.chat import Messages, Sample, Sampling


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def cpu_environment(environ: MutableMapping[str, str]) -> bool:
    """vLLM's CPU build needs a KV-cache size and a core binding (`all` crashes it): set where
    unset, in `environ`. Whether this machine has no GPU; GPU images never change anything here."""
    if not _on_cpu():
        return False
    cores = sorted(os.sched_getaffinity(0))
    environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores)))
    return True


def _cpu_defaults() -> dict[str, object]:
    """The CPU settings of an in-process engine: it avoids a ~15 s engine-process start per stage.

    Chunked prefill is turned off on CPU: with per-request seeds, vllm-cpu 0.32 rewinds the
    CPU generator of a request whose prefill was split ("CPU Generator does not use offset")."""
    if not cpu_environment(os.environ):
        return {}
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return {"enable_chunked_prefill": False}


def engine_options(settings: Generation, platform_options: dict[str, object]) -> dict[str, object]:
    """The throughput settings a GPU user tunes, passed only when set (vLLM's own defaults
    otherwise); the platform's constraints win over the spec's wishes."""
    options: dict[str, object] = {"enable_chunked_prefill": settings.enable_chunked_prefill}
    if settings.max_num_seqs is not None:
        options["max_num_seqs"] = settings.max_num_seqs
    if settings.max_num_batched_tokens is not None:
        options["max_num_batched_tokens"] = settings.max_num_batched_tokens
    return {**options, **platform_options}


def lora_options(adapter: Path | None) -> dict[str, object]:
    """vLLM's LoRA settings for one adapter: its rank rounded up to one vLLM's kernels take."""
    if adapter is None:
        return {}
    from selftaught.engines.adapters import read_adapter, vllm_max_rank

    return {"enable_lora": True, "max_loras": 1, "max_lora_rank": vllm_max_rank(read_adapter(adapter).rank)}


class VllmEngine:
    """The `ChatEngine` of every generation stage: `model_path`'s model, or with `adapter` that
    LoRA adapter on it (the base's weights loaded once, the adapter applied per request)."""

    def __init__(
        self,
        model_path: Path,
        settings: Generation,
        seed: int = 0,
        on_samples: Callable[[int], None] | None = None,
        adapter: Path | None = None,
    ):
        platform_options = _cpu_defaults()
        from vllm import LLM

        self.settings = settings
        #: told the samples of each request vLLM finishes: a stage's progress as it goes
        self.on_samples = on_samples
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("judge", 1, str(adapter))
        self.llm = LLM(
            model=str(model_path),
            tensor_parallel_size=settings.tensor_parallel,
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=settings.enforce_eager,
            enable_prefix_caching=settings.enable_prefix_caching,
            seed=seed,
            **lora_options(adapter),
            **engine_options(settings, platform_options),
        )

    @property
    def max_model_len(self) -> int:
        """`generation.maxModelLen`, or the model's own context length when that is unset."""
        return int(self.llm.model_config.max_model_len)

    def prompt_tokens(self, conversations: Sequence[Messages]) -> list[int]:
        """Rendered with the model's chat template and tokenized as vLLM's `chat` does (no extra
        special tokens: the template has them), a batch at a time."""
        tokenizer = self.llm.get_tokenizer()
        counts: list[int] = []
        size = self.settings.batch_size
        for start in range(0, len(conversations), size):
            batch = [list(c) for c in conversations[start : start + size]]
            texts = tokenizer.apply_chat_template(batch, tokenize=False, add_generation_prompt=True)
            counts.extend(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        return counts

    def chat(
        self,
        conversations: Sequence[Messages],
        sampling: Sampling,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Sample]]:
        """Samples per conversation, in order. `seeds` makes each request reproducible on its own,
        so a resumed shard draws the same samples as the interrupted one."""
        from vllm import SamplingParams

        results: list[list[Sample]] = []
        size = self.settings.batch_size
        for start in range(0, len(conversations), size):
            batch = conversations[start : start + size]
            params = [
                SamplingParams(
                    n=sampling.n,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens,
                    seed=None if seeds is None else seeds[start + i],
                )
                for i in range(len(batch))
            ]
            outputs = self.llm.chat(
                list(batch), params, use_tqdm=_request_counter(self.on_samples) if self.on_samples else False, lora_request=self.lora_request
            )
            results.extend(
                [Sample(c.text, len(c.token_ids), c.finish_reason == "length") for c in output.outputs] for output in outputs
            )
        return results


def _request_counter(on_samples: Callable[[int], None]) -> Callable[..., object]:
    """A progress-bar class for vLLM's `use_tqdm` that draws nothing: vLLM updates its bar by the
    samples of each request it finishes, which go to `on_samples` (the bar over rendering the
    prompts, which vLLM also makes, is not counted)."""
    from tqdm import tqdm

    class RequestCounter(tqdm):
        def __init__(self, *args, **kwargs):
            self._requests = not args and kwargs.get("iterable") is None  # the engine's bar, not the rendering's
            kwargs.update(file=_DISCARD, mininterval=3600.0)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self._requests and n:
                on_samples(int(n))
            return super().update(n)

    return RequestCounter


class _Discard:
    """Where the counting bar draws: nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


_DISCARD = _Discard()
