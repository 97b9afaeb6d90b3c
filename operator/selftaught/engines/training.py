"""Supervised fine-tuning of the judge with the HF Trainer and DeepSpeed.

Runs under a distributed launcher (torchrun or the `deepspeed` launcher): one process per GPU,
or on CPU with `DS_ACCELERATOR=cpu` and the gloo backend (how the tests and the local default
run it). The loss is taken on the judgment tokens only.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.api.spec import Train

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


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
class TokenizedExamples:
    examples: list[dict[str, list[int]]]
    too_long: int
    completion_tokens: int


def tokenize_sft(records: Iterable[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> TokenizedExamples:
    """Prompt through the model's chat template, judgment as the assistant turn; labels mask the
    prompt. The whole conversation is rendered once so the assistant turn carries the template's
    own end-of-turn tokens."""
    examples, too_long, completion_tokens = [], 0, 0
    for record in records:
        messages = record["messages"]
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": record["completion"]}], tokenize=False
        )
        if not full_text.startswith(prompt_text):  # templates that rewrite earlier turns
            full_text = prompt_text + record["completion"] + (tokenizer.eos_token or "")
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        input_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        if len(input_ids) > max_seq_len:
            too_long += 1
            continue
        labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
        completion_tokens += len(input_ids) - len(prompt_ids)
        examples.append({"input_ids": input_ids, "labels": labels, "attention_mask": [1] * len(input_ids)})
    return TokenizedExamples(examples, too_long, completion_tokens)


def train_sft(
    *,
    model_path: Path,
    records: Iterable[dict[str, Any]],
    train: Train,
    output_dir: Path,
    work_dir: Path,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Fine-tune `model_path` on SFT records and save an HF checkpoint to `output_dir` (on the
    main process). `on_step(step, steps)` hears of every optimizer step. Returns numbers for the
    stage manifest."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    on_gpu = torch.cuda.is_available()
    bf16 = train.bf16 and ((on_gpu and torch.cuda.is_bf16_supported()) or not on_gpu)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = tokenize_sft(records, tokenizer, train.max_seq_len)
    if not data.examples:
        from selftaught.errors import EmptyDataset

        raise EmptyDataset(
            f"no training example fits train.maxSeqLen={train.max_seq_len} ({data.too_long} too long)"
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = train.micro_batch_size * train.gradient_accumulation * world
    steps = max(1, math.ceil(len(data.examples) / per_step * train.epochs))
    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation,
        learning_rate=train.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": train.min_lr_ratio},
        warmup_steps=min(train.warmup_steps, steps),
        num_train_epochs=train.epochs,
        weight_decay=train.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        bf16=bf16,
        gradient_checkpointing=train.gradient_checkpointing,
        deepspeed=deepspeed_config(train, bf16=bf16),
        save_strategy="no",
        report_to=[],
        logging_steps=max(1, steps // 20),
        seed=train.seed,
        use_cpu=not on_gpu,
        disable_tqdm=True,
        ddp_backend=None if on_gpu else "gloo",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data.examples,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
    )
    if on_step is not None:
        trainer.add_callback(_steps_to(on_step))
    result = trainer.train()
    trainer.save_model(str(output_dir))  # gathers ZeRO-3 shards; writes on the main process only
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output_dir))  # with its chat template: vLLM loads it as is
        for path in output_dir.rglob("*"):
            path.chmod(0o644 if path.is_file() else 0o755)  # HF writes 0600; pods read as another user
    return {
        "examples": len(data.examples),
        "too_long": data.too_long,
        "completion_tokens": data.completion_tokens,
        "steps": result.global_step,
        "train_loss": float(result.training_loss),
        "train_seconds": float(result.metrics.get("train_runtime", 0.0)),
    }


def _steps_to(on_step: Callable[[int, int], None]) -> object:
    """A Trainer callback that reports each optimizer step and the steps in all."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            on_step(0, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            on_step(state.global_step, state.max_steps)

    return Steps()
