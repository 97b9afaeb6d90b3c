"""Supervised fine-tuning of the judge with TRL's SFTTrainer (the HF Trainer) and DeepSpeed.

Runs under a distributed launcher (torchrun or the `deepspeed` launcher): one process per GPU,
or on CPU with `DS_ACCELERATOR=cpu` and the gloo backend (how the tests and the local default
run it). Our code keeps the judge's data format, the DeepSpeed config and the choices made from
a memory estimate (`engines/memory.py`); TRL does the tokenisation, the completion-only loss,
padding-free batches and packing, and the Liger kernels on a GPU.

With `train.lora` every trainer gets PEFT's LoRA config (`peft_config`) and trains adapters on
the frozen base (in 4 bits with `quantize: nf4`, bitsandbytes' QLoRA, GPUs only); continuing the
previous iteration's adapter (`initFrom: previous`) hands TRL that adapter, trainable, on the base.
The saved checkpoint is the adapter alone, naming its base (`engines/adapters.py`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selftaught.api.spec import ModelSource, Train
from selftaught.engines.checkpointing import Checkpointing
from selftaught.engines.memory import VLLM_GPU_SHARE

log = logging.getLogger(__name__)

#: the frozen copy of a continued adapter TRL's DPO and GRPO trainers add as their reference model;
#: PEFT saves it in a folder of its name beside the adapter, which is no part of the checkpoint
REFERENCE_ADAPTER = "ref"


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


@dataclass
class Prepared:
    """What both trainers start from: the tokenizer, the model, and the choices made for it."""

    tokenizer: Any
    model: Any
    on_gpu: bool
    bf16: bool
    world: int
    checkpointing: Any  # engines.memory.CheckpointingChoice
    fused: bool
    #: PEFT's LoRA config for the trainer (`peft_config`): a fresh adapter; None for full
    #: fine-tuning or when `model` already carries the adapter it continues
    peft_config: Any = None

    def args(self, train: Train, work_dir: Path) -> dict[str, Any]:
        """The TrainingArguments both TRL configs share."""
        return dict(
            output_dir=str(work_dir),
            per_device_train_batch_size=train.micro_batch_size,
            gradient_accumulation_steps=train.gradient_accumulation,
            learning_rate=learning_rate(train, train.learning_rate),
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": train.min_lr_ratio},
            warmup_steps=train.warmup_steps,
            num_train_epochs=train.epochs,
            weight_decay=train.weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            bf16=self.bf16,
            gradient_checkpointing=self.checkpointing.on,
            deepspeed=deepspeed_config(train, bf16=self.bf16),
            save_strategy="no",
            report_to=reporting(),
            logging_steps=10,
            seed=train.seed,
            use_cpu=not self.on_gpu,
            disable_tqdm=True,
            ddp_backend=None if self.on_gpu else "gloo",
            dataset_num_proc=None,
            use_liger_kernel=self.fused,
            torch_compile=train.compile,
        )


def reporting() -> list[str]:
    """The Trainer's own loggers (its MLflow and W&B callbacks: loss, and a GRPO trainer's reward,
    per logged step): the ones the stage process found answering and pointed at the run's
    tracking runs through their environment variables (`views/tracking`), else none."""
    return [name for name in os.environ.get("SELFTAUGHT_REPORT_TO", "").split(",") if name in {"mlflow", "wandb"}]


def _tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def learning_rate(train: Train, full: float) -> float:
    """The peak learning rate: `full` (full fine-tuning's), or the adapters' with `train.lora`."""
    return train.lora.learning_rate_for(full) if train.lora is not None else full


def _lora_shape(train: Train) -> Any:
    from selftaught.engines.memory import LoraShape

    lora = train.lora
    return None if lora is None else LoraShape(lora.rank, tuple(lora.target_modules), quantized=lora.quantize == "nf4")


def _parameters(model_path: Path) -> int | None:
    """The model's parameters from its safetensors headers (no weights read), if it has them."""
    from selftaught.engines.weights import weights_of

    weights = weights_of(ModelSource(source=str(model_path)))
    return sum(weights.parameters.values()) if weights is not None else None


def _quantization(train: Train, on_gpu: bool, bf16: bool) -> dict[str, Any]:
    """`from_pretrained`'s arguments for QLoRA's 4-bit base (`train.lora.quantize: nf4`); refused
    on a machine without a GPU or bitsandbytes, naming the field."""
    if train.lora is None or train.lora.quantize == "none":
        return {}
    from selftaught.errors import DoesNotFit

    if not on_gpu:
        raise DoesNotFit(
            "train.lora.quantize: nf4 (QLoRA) holds the base in 4 bits with bitsandbytes, which needs a CUDA GPU, and this "
            "machine has none: set train.lora.quantize: none (LoRA on a 16-bit base), or run the train stage on a GPU"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise DoesNotFit(
            "train.lora.quantize: nf4 (QLoRA) needs the bitsandbytes package (the gpu extra and the train image have it): "
            "install it, or set train.lora.quantize: none"
        ) from None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if bf16 else torch.float32
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,  # stored as the weights' dtype, so ZeRO-3 can shard the 4-bit weights like any
    )  # fmt: skip
    return {"quantization_config": config, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def _prepare(
    model_path: Path, train: Train, tokenizer: Any, micro_tokens: int, *, reference: bool, gpu_share: float = 1.0, adapter: Path | None = None
) -> Prepared:
    """Load the model and choose checkpointing (from the memory estimate; a reference model
    for DPO is one more copy of the weights; `gpu_share`: the fraction of each GPU's memory left
    to training, when vLLM holds the rest) and the fused kernels. A run that cannot fit the GPU
    even so is refused before the weights load (DoesNotFit, naming the settings to change).
    With `train.lora`: a fresh adapter's config for the trainer, or `adapter` (the previous
    iteration's) loaded trainable on the model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed

    from selftaught.engines.memory import ModelShape, choose_checkpointing, estimate

    on_gpu = torch.cuda.is_available()
    bf16 = train.bf16 and ((on_gpu and torch.cuda.is_bf16_supported()) or not on_gpu)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    lora = _lora_shape(train)
    gpu_bytes = int(torch.cuda.mem_get_info()[1] * gpu_share) if on_gpu else None
    config = AutoConfig.from_pretrained(model_path)

    def memory(parameters: int) -> Any:
        return estimate(
            ModelShape.of(config, parameters), tokens=micro_tokens, zero_stage=train.zero_stage,
            world=world, offload_optimizer=train.offload_optimizer, bf16=bf16, reference=reference, lora=lora,
        )  # fmt: skip

    counted = _parameters(model_path) if on_gpu else None
    if gpu_bytes is not None and counted is not None:
        _refuse_what_does_not_fit(memory(counted), gpu_bytes, train, world, lora)
    loading = _quantization(train, on_gpu, bf16)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32, **loading)
    required = memory(counted or sum(p.numel() for p in model.parameters()))
    if gpu_bytes is not None and counted is None:
        _refuse_what_does_not_fit(required, gpu_bytes, train, world, lora)
    checkpointing = choose_checkpointing(train.gradient_checkpointing, required, gpu_bytes)
    log.info("gradient checkpointing %s (%s)", "on" if checkpointing.on else "off", checkpointing.reason)
    peft_config = None
    if train.lora is not None:
        from selftaught.engines.adapters import lora_config

        set_seed(train.seed)  # PEFT draws the adapters' first weights: the same ones every attempt
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            peft_config = lora_config(train.lora)
    elif adapter is not None:
        from selftaught.errors import InvalidInput

        raise InvalidInput(f"{adapter} is a LoRA adapter: set train.lora to go on training it (full fine-tuning needs a full model)")
    return Prepared(tokenizer, model, on_gpu, bf16, world, checkpointing, use_fused_kernels(train.fused_kernels, on_gpu), peft_config)


def _refuse_what_does_not_fit(required: Any, gpu_bytes: int, train: Train, world: int, lora: Any) -> None:
    from selftaught.engines.memory import does_not_fit
    from selftaught.errors import DoesNotFit

    message = does_not_fit(
        required, gpu_bytes, gradient_checkpointing=train.gradient_checkpointing, lora=lora, zero_stage=train.zero_stage, world=world,
        offload_optimizer=train.offload_optimizer, micro_batch_size=train.micro_batch_size,
    )  # fmt: skip
    if message is not None:
        raise DoesNotFit(message)


def _fit(
    trainer: Any, prepared: Prepared, train: Train, output_dir: Path, on_step: Callable[[int, int], None] | None, checkpoints: Checkpointing | None,
    base: ModelSource,
) -> Any:  # fmt: skip
    """Train (continuing from a checkpoint and saving them, with `checkpoints`), then save an HF
    checkpoint vLLM loads as is (on the main process)."""
    per_step = train.micro_batch_size * train.gradient_accumulation * prepared.world
    steps = max(1, math.ceil(len(trainer.train_dataset) / per_step * train.epochs))  # after packing, if any
    trainer.args.warmup_steps = min(train.warmup_steps, steps)  # the scheduler is built when training starts
    if on_step is not None:
        trainer.add_callback(_steps_to(on_step))
    return _train_and_save(trainer, prepared.tokenizer, output_dir, checkpoints, base=base)


def _train_and_save(
    trainer: Any, tokenizer: Any, output_dir: Path, checkpoints: Checkpointing | None, step_multiple: int = 1, *, base: ModelSource
) -> Any:
    """`trainer.train()` (continued from the stage's newest checkpoint and saving them, with
    `checkpoints`), then the HF checkpoint vLLM loads as is, on the main process: the model with
    its tokenizer, or with LoRA the adapter alone, naming `base` (the tokenizer is the base's). A
    stop while it is saved waits: once trained, finishing beats redoing the steps since the last
    checkpoint."""
    from accelerate.utils import is_peft_model

    if checkpoints is None:
        result, finishing = trainer.train(), contextlib.nullcontext()
    else:
        result, finishing = checkpoints.train(trainer, step_multiple=step_multiple), checkpoints.stop.deferred()
    adapter = is_peft_model(trainer.model)
    with finishing:
        trainer.save_model(str(output_dir))  # gathers ZeRO-3 shards (with LoRA the adapters'); writes on the main process only
        if trainer.is_world_process_zero():
            if adapter:
                from selftaught.engines.adapters import name_base

                shutil.rmtree(output_dir / REFERENCE_ADAPTER, ignore_errors=True)
                name_base(output_dir, base)
            else:
                tokenizer.save_pretrained(str(output_dir))  # with its chat template
            for path in output_dir.rglob("*"):
                path.chmod(0o644 if path.is_file() else 0o755)  # HF writes 0600; pods read as another user
    return result


def trainable_parameters(model: Any) -> int:
    """Parameters the optimizer updates (every one, or the adapters'; ZeRO-3's full sizes)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)


def _numbers(
    result: Any, prepared: Prepared, model: Any, examples: int, too_long: int, tokens: float, checkpoints: Checkpointing | None
) -> dict[str, float]:
    """The manifest's numbers. A resumed attempt trained only the steps after its checkpoint, in
    its seconds: its speed counts their share of the tokens (its loss is the Trainer's, theirs)."""
    seconds = float(result.metrics.get("train_runtime", 0.0))
    resumed = checkpoints.resumed.step if checkpoints is not None and checkpoints.resumed is not None else 0
    trained = tokens * (result.global_step - resumed) / result.global_step if result.global_step else tokens
    return {
        "examples": examples,
        "too_long": too_long,
        "tokens": tokens,
        "steps": result.global_step,
        "train_loss": float(result.training_loss),
        "train_seconds": seconds,
        "tokens_per_second_per_gpu": trained / seconds / prepared.world if seconds > 0 else 0.0,
        "gradient_checkpointing": int(prepared.checkpointing.on),
        "fused_kernels": int(prepared.fused),
        "trainable_parameters": trainable_parameters(model),
    }


def _nothing_fits(train: Train, too_long: int, what: str = "training example") -> Exception:
    from selftaught.errors import EmptyDataset

    if not too_long:  # nothing was there to fit: not a length problem
        return EmptyDataset(f"no {what} to train on: the training data has none")
    return EmptyDataset(f"no {what} fits train.maxSeqLen={train.max_seq_len} ({too_long} too long)")


def train_sft(
    *,
    model_path: Path,
    records: Iterable[dict[str, Any]],
    train: Train,
    output_dir: Path,
    work_dir: Path,
    on_step: Callable[[int, int], None] | None = None,
    checkpoints: Checkpointing | None = None,
    adapter: Path | None = None,
    base: ModelSource | None = None,
) -> dict[str, float]:
    """Fine-tune `model_path` on SFT records with TRL's SFTTrainer (loss on the judgment tokens
    only, padding-free batches or packed sequences, a fused LM head that never materialises the
    logits) and save an HF checkpoint to `output_dir` (on the main process). `on_step(step,
    steps)` hears of every optimizer step; `checkpoints` continues from the stage's newest
    checkpoint and saves them as it trains (the Trainer writes them under `work_dir`). With
    `train.lora` it trains adapters on `model_path`: a fresh one, or `adapter` continued, and
    saves the adapter naming `base` (the model's source as the spec gives it; default its path).
    Returns numbers for the stage manifest."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = _tokenizer(model_path)
    data = fitting_examples(records, tokenizer, train.max_seq_len)
    if not data.rows:
        raise _nothing_fits(train, data.too_long)
    micro_tokens = train.micro_batch_size * (train.max_seq_len if train.packing else data.longest)
    prepared = _prepare(model_path, train, tokenizer, micro_tokens, reference=False, adapter=adapter)
    args = SFTConfig(
        **prepared.args(train, work_dir),
        # the data: conversational prompt-completion rows, loss on the completion only
        completion_only_loss=True,
        packing=train.packing,
        padding_free=True,  # examples laid end to end, position ids restarting: no padding, no cross-attention
        max_length=train.max_seq_len if train.packing else None,  # too-long examples are already dropped
    )
    trainer = SFTTrainer(
        model=prepared.model, args=args, train_dataset=Dataset.from_list(data.rows), processing_class=tokenizer, peft_config=prepared.peft_config
    )
    result = _fit(trainer, prepared, train, output_dir, on_step, checkpoints, base or ModelSource(source=str(model_path)))
    numbers = _numbers(result, prepared, trainer.model, len(data.rows), data.too_long, data.tokens * train.epochs, checkpoints)
    return {**numbers, "completion_tokens": _completion_tokens(trainer.train_dataset)}


def fitting_pairs(records: Iterable[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> FittingExamples:
    """DPO records (`messages`, `chosen`, `rejected` judgments) as TRL's conversational preference
    rows; a pair with either judgment longer than `max_seq_len` in all is dropped and counted."""
    rows, too_long, tokens, longest = [], 0, 0, 0
    for record in records:
        prompt = list(record["messages"])
        chosen = [{"role": "assistant", "content": record["chosen"]}]
        rejected = [{"role": "assistant", "content": record["rejected"]}]
        lengths = [len(tokenizer.apply_chat_template(prompt + side, tokenize=True, return_dict=True)["input_ids"]) for side in (chosen, rejected)]
        if max(lengths) > max_seq_len:
            too_long += 1
            continue
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        tokens += sum(lengths)
        longest = max(longest, *lengths)
    return FittingExamples(rows, too_long, tokens, longest)


def train_dpo(
    *,
    model_path: Path,
    records: Iterable[dict[str, Any]],
    train: Train,
    output_dir: Path,
    work_dir: Path,
    on_step: Callable[[int, int], None] | None = None,
    checkpoints: Checkpointing | None = None,
    adapter: Path | None = None,
    base: ModelSource | None = None,
) -> dict[str, float]:
    """Preference optimisation of `model_path` on pairs of judgments with TRL's DPOTrainer: the
    reference model is the model trained from (TRL loads a frozen copy; under ZeRO-3 it is
    sharded too), the loss is `train.dpo.lossType` with `beta`, plus `nllWeight` x the SFT loss on
    the chosen judgment if set. With `train.lora` the reference is the adapters' starting point
    without a copy of the weights (TRL: the base with the fresh adapter off, or a frozen copy of
    the continued `adapter`). Same checkpoint and numbers as `train_sft`."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer = _tokenizer(model_path)
    data = fitting_pairs(records, tokenizer, train.max_seq_len)
    if not data.rows:
        raise _nothing_fits(train, data.too_long, "judgment pair")
    # chosen and rejected go through the model together: twice the tokens of the longer one
    prepared = _prepare(model_path, train, tokenizer, 2 * train.micro_batch_size * data.longest, reference=True, adapter=adapter)
    dpo = train.dpo
    losses, weights = [dpo.loss_type], [1.0]
    if dpo.nll_weight > 0:
        losses.append("sft")
        weights.append(dpo.nll_weight)
    args = DPOConfig(**prepared.args(train, work_dir), beta=dpo.beta, loss_type=losses, loss_weights=weights, max_length=None)
    trainer = DPOTrainer(
        model=prepared.model, args=args, train_dataset=Dataset.from_list(data.rows), processing_class=tokenizer, peft_config=prepared.peft_config
    )
    result = _fit(trainer, prepared, train, output_dir, on_step, checkpoints, base or ModelSource(source=str(model_path)))
    return {**_numbers(result, prepared, trainer.model, len(data.rows), data.too_long, data.tokens * train.epochs, checkpoints), "pairs": len(data.rows)}


def generation_steps(micro_batch_size: int, accumulation: int, group_size: int, rows_per_pair: int) -> int:
    """TRL's `steps_per_generation`: the fewest micro-batches, a multiple of the accumulation, whose
    completions (micro x steps per process) are whole groups of whole pairs. TRL needs whole groups
    (its generation batch divisible by `num_generations`); a reward with a partner (the other order,
    the other answer's rating) needs the pair's rows in the same process's batch, and the rows of a
    pair are adjacent. So any group size works, the batch grows instead."""
    need = group_size * rows_per_pair
    steps = accumulation
    while (micro_batch_size * steps) % need:
        steps += accumulation
    return steps



#: Scores a batch of judgments: (each judgment's row, its text) -> each reward term's values.
Scorer = Callable[[list[dict[str, Any]], list[str]], dict[str, list[float]]]


@dataclass
class GrpoCurve:
    """What the trainer logged as it went: one point per logging window (TRL averages over it)."""

    points: list[dict[str, float]]
    rollouts: int = 0
    rollout_tokens: int = 0

    def mean(self, key: str) -> float | None:
        values = [point[key] for point in self.points if point.get(key) is not None]
        return sum(values) / len(values) if values else None


def train_grpo(
    *,
    model_path: Path,
    rows: list[dict[str, Any]],
    scorer: Scorer,
    terms: tuple[str, ...],
    weights: dict[str, float],
    rows_per_pair: int,
    max_completion_tokens: int,
    train: Train,
    output_dir: Path,
    work_dir: Path,
    seed: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
    checkpoints: Checkpointing | None = None,
    adapter: Path | None = None,
    base: ModelSource | None = None,
    vllm: bool | None = None,
) -> dict[str, Any]:
    """Online RL of the judge on its own sampled judgments with TRL's GRPOTrainer: every step
    samples `train.grpo.groupSize` judgments per prompt (`rows`: `prompt` messages plus the
    columns `scorer` reads), rewards each (`scorer`'s terms, weighted), and moves the model toward
    the better ones of its group, with a KL term against the model trained from when beta > 0.
    Rollouts are vLLM's inside the training processes on GPUs (TRL's colocated mode), the model's
    own `generate` on CPU. `seed` (default `train.seed`) seeds the sampling: each iteration its
    own, so iterations draw fresh rollouts. `on_metrics` hears the logged reward and each term's
    mean. Checkpoints and saves the model like `train_sft`, checkpoints only between generation
    blocks (a resumed block would be sampled again and trained from its first slice); returns
    numbers for the manifest and the curve. `adapter` and `base` as for `train_sft` (with LoRA,
    the colocated vLLM gets the adapters merged in for each generation: TRL's way). `vllm` unset:
    vLLM on a GPU, `generate` on CPU, as the stage runs; False: `generate` on a GPU too (what
    benchmarks/gpu_check.py measures where vLLM cannot be installed)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if not rows:
        from selftaught.errors import EmptyDataset

        raise EmptyDataset("no training pair to sample judgments for")
    grpo = train.grpo
    tokenizer = _tokenizer(model_path)
    longest_prompt = max(
        len(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]) for row in rows
    )
    prepared = _prepare(
        model_path, train, tokenizer, train.micro_batch_size * (longest_prompt + max_completion_tokens), reference=grpo.beta > 0,
        gpu_share=1 - VLLM_GPU_SHARE, adapter=adapter,
    )  # fmt: skip
    per_step = train.micro_batch_size * train.gradient_accumulation * prepared.world
    steps = grpo.steps or max(1, len(rows) * grpo.group_size // per_step)
    curve = GrpoCurve([])

    def term(name: str) -> Callable[..., list[float]]:
        def reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **columns: Any) -> list[float]:
            if name == terms[0]:  # count each batch once
                curve.rollouts += len(completions) * prepared.world
                curve.rollout_tokens += sum(len(ids) for ids in completion_ids) * prepared.world
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            batch = [{key: columns[key][i] for key in columns if key in rows[0]} for i in range(len(texts))]
            return scorer(batch, texts)[name]

        reward.__name__ = name  # TRL logs `rewards/<name>/mean`
        return reward

    args = prepared.args(train, work_dir)
    del args["dataset_num_proc"]  # SFT's and DPO's: GRPO tokenizes its prompts as it samples
    args.update(
        learning_rate=learning_rate(train, grpo.learning_rate),
        num_train_epochs=1,
        max_steps=grpo.steps or -1,
        warmup_steps=min(train.warmup_steps, steps),
        logging_steps=max(1, steps // 50),  # at most ~50 points of the curve
        seed=train.seed if seed is None else seed,
    )
    on_gpu = prepared.on_gpu
    config = GRPOConfig(
        **args,
        num_generations=grpo.group_size,
        max_completion_length=max_completion_tokens,
        temperature=grpo.temperature,
        beta=grpo.beta,
        reward_weights=[weights[name] for name in terms],
        steps_per_generation=generation_steps(train.micro_batch_size, train.gradient_accumulation, grpo.group_size, rows_per_pair),
        shuffle_dataset=False,  # the rows come in a seeded order, a pair's rows adjacent: TRL must keep it
        use_vllm=on_gpu if vllm is None else vllm,
        vllm_mode="colocate",  # vLLM in the training processes, sharing their GPUs: no server to run
        vllm_gpu_memory_utilization=VLLM_GPU_SHARE,
        vllm_max_model_length=longest_prompt + max_completion_tokens,
    )
    trainer = GRPOTrainer(
        model=prepared.model, reward_funcs=[term(name) for name in terms], args=config,
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=prepared.peft_config,
    )  # fmt: skip
    trainer.add_callback(_logs_to(curve, terms, on_metrics))
    if on_step is not None:
        trainer.add_callback(_steps_to(on_step))
    # TRL samples once per `steps_per_generation` micro-batches and trains on slices of it; a resumed
    # trainer samples again and starts at the first slice, so a checkpoint sits between blocks
    block = config.steps_per_generation * config.num_iterations // train.gradient_accumulation
    result = _train_and_save(trainer, tokenizer, output_dir, checkpoints, step_multiple=block, base=base or ModelSource(source=str(model_path)))
    seconds = float(result.metrics.get("train_runtime", 0.0))
    return {
        "examples": len(rows),
        "steps": result.global_step,
        "train_loss": float(result.training_loss),
        "train_seconds": seconds,
        "rollouts": curve.rollouts,
        "rollout_tokens": curve.rollout_tokens,
        "tokens_per_second_per_gpu": curve.rollout_tokens / seconds / prepared.world if seconds > 0 else 0.0,
        "gradient_checkpointing": int(prepared.checkpointing.on),
        "trainable_parameters": trainable_parameters(trainer.model),
        "reward": curve.mean("reward"),
        "accuracy": curve.mean(terms[0]),
        "curve": curve.points,
    }


def _logs_to(curve: GrpoCurve, terms: tuple[str, ...], on_metrics: Callable[[dict[str, float]], None] | None) -> object:
    """A Trainer callback that keeps the reward and each term's mean TRL logs (gathered over all
    processes, averaged over the logging window) as a point of the curve."""
    from transformers import TrainerCallback

    class Logs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            point = {"step": float(state.global_step), "reward": float(logs["reward"])}
            point.update({name: float(logs[f"rewards/{name}/mean"]) for name in terms if f"rewards/{name}/mean" in logs})
            curve.points.append(point)
            if on_metrics is not None:
                on_metrics(point)

    return Logs()


def _completion_tokens(dataset: Any) -> int:
    """Tokens the loss is taken on (TRL's labels that are not -100), per epoch."""
    return sum(sum(1 for label in labels if label != -100) for labels in dataset["labels"]) if "labels" in dataset.column_names else 0


def _steps_to(on_step: Callable[[int, int], None]) -> object:
    """A Trainer callback that reports each optimizer step and the steps in all."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            on_step(state.global_step, state.max_steps)  # past 0 when continuing from a checkpoint

        def on_step_end(self, args, state, control, **kwargs):
            on_step(state.global_step, state.max_steps)

    return Steps()
