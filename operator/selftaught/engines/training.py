"""Supervised fine-tuning of the judge with TRL's SFTTrainer (the HF Trainer) and DeepSpeed.

Runs under a distributed launcher (torchrun or the `deepspeed` launcher): one process per GPU,
or on CPU with `DS_ACCELERATOR=cpu` and the gloo backend (how the tests and the local default
run it). Our code keeps the judge's data format, the DeepSpeed config and the choices made from
a memory estimate (`engines/memory.py`); TRL does the tokenisation, the completion-only loss,
padding-free batches and packing, and the Liger kernels on a GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.api.spec import Train

log = logging.getLogger(__name__)


def deepspeed_config(train: Train, *, bf16: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        # without this, save_model() writes only sharded ZeRO state, not safetensors
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload_optimizer and train.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
    }


@dataclass
class FittingExamples:
    """The records that fit `train.maxSeqLen`, as TRL's conversational prompt-completion rows."""

    rows: list[dict[str, Any]]
    too_long: int
    tokens: int  # prompt + judgment tokens of the rows kept: what one epoch trains on
    longest: int


def fitting_examples(records: Iterable[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> FittingExamples:
    """Drop (and count) the examples longer than `max_seq_len`: a cut judgment would lose its
    verdict, so they are never truncated. Lengths come from the same chat template TRL renders;
    TRL does the tokenisation, the completion-only labels and the packing."""
    rows, too_long, tokens, longest = [], 0, 0, 0
    for record in records:
        prompt = list(record["messages"])
        completion = [{"role": "assistant", "content": record["completion"]}]
        length = len(tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"])
        if length > max_seq_len:
            too_long += 1
            continue
        rows.append({"prompt": prompt, "completion": completion})
        tokens += length
        longest = max(longest, length)
    return FittingExamples(rows, too_long, tokens, longest)


def liger_available() -> bool:
    try:
        import liger_kernel  # noqa: F401
    except ImportError:  # not in the CPU install: it needs Triton and a GPU
        return False
    return True


def use_fused_kernels(setting: bool | None, on_gpu: bool) -> bool:
    """Unset: on where they can run. Asked for where they cannot: said, not ignored."""
    if setting is None:
        return on_gpu and liger_available()
    if setting and not (on_gpu and liger_available()):
        from selftaught.errors import DoesNotFit

        raise DoesNotFit("train.fusedKernels: true needs a GPU and the liger-kernel package (the train image has both); leave it unset")
    return setting


def train_sft(
    *,
    model_path: Path,
    records: Iterable[dict[str, Any]],
    train: Train,
    output_dir: Path,
    work_dir: Path,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Fine-tune `model_path` on SFT records with TRL's SFTTrainer (loss on the judgment tokens
    only, padding-free batches or packed sequences, a fused LM head that never materialises the
    logits) and save an HF checkpoint to `output_dir` (on the main process). `on_step(step,
    steps)` hears of every optimizer step. Returns numbers for the stage manifest."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from selftaught.engines.memory import ModelShape, choose_checkpointing, estimate

    on_gpu = torch.cuda.is_available()
    bf16 = train.bf16 and ((on_gpu and torch.cuda.is_bf16_supported()) or not on_gpu)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = fitting_examples(records, tokenizer, train.max_seq_len)
    if not data.rows:
        from selftaught.errors import EmptyDataset

        raise EmptyDataset(
            f"no training example fits train.maxSeqLen={train.max_seq_len} ({data.too_long} too long)"
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    micro_tokens = train.micro_batch_size * (train.max_seq_len if train.packing else data.longest)
    memory = estimate(
        ModelShape.of(model.config, sum(p.numel() for p in model.parameters())),
        tokens=micro_tokens, zero_stage=train.zero_stage, world=world, offload_optimizer=train.offload_optimizer, bf16=bf16,
    )  # fmt: skip
    checkpointing = choose_checkpointing(train.gradient_checkpointing, memory, torch.cuda.mem_get_info()[1] if on_gpu else None)
    log.info("gradient checkpointing %s (%s)", "on" if checkpointing.on else "off", checkpointing.reason)
    fused = use_fused_kernels(train.fused_kernels, on_gpu)
    args = SFTConfig(
        output_dir=str(work_dir),
        per_device_train_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation,
        learning_rate=train.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": train.min_lr_ratio},
        warmup_steps=train.warmup_steps,
        num_train_epochs=train.epochs,
        weight_decay=train.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=bf16,
        gradient_checkpointing=checkpointing.on,
        deepspeed=deepspeed_config(train, bf16=bf16),
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        seed=train.seed,
        use_cpu=not on_gpu,
        disable_tqdm=True,
        ddp_backend=None if on_gpu else "gloo",
        # the data: conversational prompt-completion rows, loss on the completion only
        completion_only_loss=True,
        packing=train.packing,
        padding_free=True,  # examples laid end to end, position ids restarting: no padding, no cross-attention
        max_length=train.max_seq_len if train.packing else None,  # too-long examples are already dropped
        dataset_num_proc=None,
        use_liger_kernel=fused,
        torch_compile=train.compile,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data.rows), processing_class=tokenizer)
    warmup = min(train.warmup_steps, trainer.args.max_steps if trainer.args.max_steps > 0 else train.warmup_steps)
    trainer.args.warmup_steps = warmup
    if on_step is not None:
        trainer.add_callback(_steps_to(on_step))
    result = trainer.train()
    trainer.save_model(str(output_dir))  # gathers ZeRO-3 shards; writes on the main process only
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output_dir))  # with its chat template: vLLM loads it as is
        for path in output_dir.rglob("*"):
            path.chmod(0o644 if path.is_file() else 0o755)  # HF writes 0600; pods read as another user
    seconds = float(result.metrics.get("train_runtime", 0.0))
    trained_tokens = data.tokens * train.epochs
    return {
        "examples": len(data.rows),
        "too_long": data.too_long,
        "completion_tokens": _completion_tokens(trainer.train_dataset),
        "tokens": trained_tokens,
        "steps": result.global_step,
        "train_loss": float(result.training_loss),
        "train_seconds": seconds,
        "tokens_per_second_per_gpu": trained_tokens / seconds / world if seconds > 0 else 0.0,
        "gradient_checkpointing": int(checkpointing.on),
        "fused_kernels": int(fused),
    }


def _completion_tokens(dataset: Any) -> int:
    """Tokens the loss is taken on (TRL's labels that are not -100), per epoch."""
    return sum(sum(1 for label in labels if label != -100) for labels in dataset["labels"]) if "labels" in dataset.column_names else 0


def _steps_to(on_step: Callable[[int, int], None]) -> object:
    """A Trainer callback that reports each optimizer step and the steps in all."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            on_step(0, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            on_step(state.global_step, state.max_steps)

    return Steps()
