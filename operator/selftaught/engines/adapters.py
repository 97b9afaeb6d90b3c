"""LoRA adapters (`train.lora`): the PEFT config a trainer gets, what a saved adapter says about
itself, and merging one into its base for a user whose serving stack needs a full model.

An adapter checkpoint is PEFT's own folder (`adapter_config.json`, `adapter_model.safetensors`),
and PEFT's own fields name its base: `base_model_name_or_path` is the seed's source as the spec
gives it (a Hub id, a path, an `s3://` prefix) and `revision` its revision, never the folder a
trainer happened to load it from. So the checkpoint is complete on its own: whoever reads it
(a judge or evaluate stage, `selftaught serve`, `selftaught export`) fetches the base as any model
and loads the adapter beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.api.spec import Lora, ModelSource
from selftaught.errors import InvalidInput

ADAPTER_CONFIG = "adapter_config.json"
#: the ranks vLLM's LoRA kernels are built for (`vllm.config.lora.MaxLoRARanks`; a unit test compares)
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def is_adapter(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class Adapter:
    """What an adapter folder says about itself."""

    base: ModelSource
    rank: int


def read_adapter(folder: Path) -> Adapter:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
        base = ModelSource(source=config["base_model_name_or_path"], revision=config.get("revision"))
        ranks = [int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidInput(f"{folder / ADAPTER_CONFIG}: not a LoRA adapter's config naming its base: {error}") from None
    return Adapter(base, max(ranks))


def name_base(folder: Path, base: ModelSource) -> None:
    """Make the adapter saved in `folder` name `base` as the spec gives it (PEFT wrote the folder
    the trainer loaded it from, a path on one machine)."""
    path = folder / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config.update(base_model_name_or_path=base.source, revision=base.revision)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def vllm_max_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of `rank`."""
    return next(size for size in VLLM_RANKS if size >= rank)


def lora_config(lora: Lora) -> Any:
    """PEFT's `LoraConfig` for `train.lora`, as TRL's trainers take it (`peft_config`)."""
    from peft import LoraConfig

    targets: str | list[str] = "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM")


def merge(base: Path, adapter: Path, output: Path) -> None:
    """The base with the adapter merged into its weights (PEFT's `merge_and_unload`), saved with
    the base's tokenizer and chat template as an HF checkpoint any server loads."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(output)
    AutoTokenizer.from_pretrained(base).save_pretrained(output)
