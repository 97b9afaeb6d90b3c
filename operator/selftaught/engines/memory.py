"""How much GPU memory one training process needs, and so whether gradient checkpointing must be
on (`train.gradientCheckpointing` unset).

Checkpointing recomputes every layer's forward in the backward pass: about a third more
arithmetic for the whole step. It is only worth paying when the activations do not fit. This is a
pure estimate, from the model's shape and the DeepSpeed settings, in the usual accounting (ZeRO
paper, Rajbhandari et al. 2020, for model states; Korthikanti et al. 2022 for activations, with
a fused attention kernel that keeps no score matrix), with a margin for what it leaves out
(CUDA context, allocator fragmentation, communication buffers).

With LoRA (`train.lora`) the base's weights are frozen: they are held once, in 16 bits or, with
`quantize: nf4` (QLoRA), in about 4.1 bits per weight of every linear layer (NormalFloat4 with
double-quantized constants; embeddings, norms and the output head stay in 16 bits); gradients and
Adam's state exist for the adapters alone. Under ZeRO-3 the frozen weights are sharded like any.
The activations are the same as full fine-tuning's: the backward pass still goes through every
layer to reach the adapters below it.

The same rule says when a run does not fit at all (`does_not_fit`): then the train stage refuses
to start, and `selftaught plan` says so, naming the settings that would make it fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1 << 30
#: what the estimate leaves out: CUDA context, NCCL and DeepSpeed buffers, the allocator's slack
FIXED_OVERHEAD = 3 * GIB
#: the fraction of the GPU's memory the estimate may fill before checkpointing turns on
FILL = 0.85
#: The share of each GPU's memory GRPO's colocated vLLM takes for its weights and KV cache (TRL's
#: default `vllm_gpu_memory_utilization`); training has the rest.
VLLM_GPU_SHARE = 0.3


@dataclass(frozen=True)
class ModelShape:
    """What the activation memory of a decoder-only transformer depends on."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key/value width: kv heads x head dim (= hidden without grouped-query attention)
    vocabulary: int

    @classmethod
    def of(cls, config: object, parameters: int) -> ModelShape:
        """From a transformers model config (Llama, Qwen, Mistral, Gemma ... field names)."""
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden = int(text.hidden_size)
        heads = int(getattr(text, "num_attention_heads", 1) or 1)
        head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        return cls(
            parameters=parameters,
            layers=int(text.num_hidden_layers),
            hidden=hidden,
            intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
            kv_dim=kv_heads * head_dim,
            vocabulary=int(text.vocab_size),
        )


#: Llama-family shapes by size, for estimates made before the model is at hand (`selftaught plan`)
_KNOWN_SHAPES = (
    ModelShape(1_100_000_000, 22, 2048, 5632, 256, 32000),
    ModelShape(3_200_000_000, 28, 3072, 8192, 1024, 128256),
    ModelShape(8_000_000_000, 32, 4096, 14336, 1024, 128256),
    ModelShape(14_000_000_000, 48, 5120, 13824, 1024, 152064),
    ModelShape(32_000_000_000, 64, 5120, 27648, 1024, 152064),
    ModelShape(70_000_000_000, 80, 8192, 28672, 1024, 128256),
    ModelShape(405_000_000_000, 126, 16384, 53248, 1024, 128256),
)


def shape_for_size(parameters: float) -> ModelShape:
    """The known Llama-family shape nearest in size (in log scale), scaled to `parameters`."""
    nearest = min(_KNOWN_SHAPES, key=lambda s: abs(math.log(s.parameters / parameters)))
    return ModelShape(int(parameters), nearest.layers, nearest.hidden, nearest.intermediate, nearest.kv_dim, nearest.vocabulary)


#: the modules of a Llama-style layer: (input width, output width) as functions of the shape
_LINEAR = {
    "q_proj": lambda s: (s.hidden, s.hidden),
    "k_proj": lambda s: (s.hidden, s.kv_dim),
    "v_proj": lambda s: (s.hidden, s.kv_dim),
    "o_proj": lambda s: (s.hidden, s.hidden),
    "gate_proj": lambda s: (s.hidden, s.intermediate),
    "up_proj": lambda s: (s.hidden, s.intermediate),
    "down_proj": lambda s: (s.intermediate, s.hidden),
}
#: bytes per weight of a 4-bit NormalFloat layer with double-quantized constants (QLoRA: 4 bits,
#: an 8-bit absmax per 64 weights, an fp32 constant per 256 of those)
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8


def linear_parameters(shape: ModelShape) -> int:
    """The weights of every layer's attention and MLP projections (what 4-bit quantization holds in 4 bits)."""
    return shape.layers * sum(a * b for a, b in (dims(shape) for dims in _LINEAR.values()))


@dataclass(frozen=True)
class LoraShape:
    """What the memory of LoRA training depends on: the adapters' rank, the modules they adapt
    (`all-linear`: every projection), and whether the base is held in 4 bits."""

    rank: int
    modules: tuple[str, ...]
    quantized: bool = False

    def parameters(self, shape: ModelShape) -> int:
        """Adapter weights: r x (in + out) per adapted module and layer (a module of another
        architecture's name counts as hidden x hidden)."""
        names = tuple(_LINEAR) if self.modules == ("all-linear",) else self.modules
        per_layer = sum(sum(_LINEAR.get(name, lambda s: (s.hidden, s.hidden))(shape)) for name in names)
        return self.rank * per_layer * shape.layers


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU for one training process."""

    model_states: int  # weights, gradients, optimizer state (after ZeRO partitioning)
    activations: int  # saved for the backward pass of one micro batch, without checkpointing
    checkpointed_activations: int  # the same with checkpointing: each layer's input, one layer whole

    def total(self, checkpointing: bool) -> int:
        return self.model_states + (self.checkpointed_activations if checkpointing else self.activations) + FIXED_OVERHEAD


def estimate(
    shape: ModelShape,
    *,
    tokens: int,
    zero_stage: int,
    world: int,
    offload_optimizer: bool,
    bf16: bool,
    reference: bool = False,
    lora: LoraShape | None = None,
) -> MemoryEstimate:
    """`tokens`: the most tokens one micro batch holds (micro batch size x longest example, or the
    packed length). `reference`: a frozen copy of the weights beside them (DPO's reference
    model; sharded like the weights under ZeRO-3; with LoRA, a copy of the adapters or none).
    `lora`: only adapters train, on a frozen (maybe 4-bit) base."""
    weight, grad, optimizer = (2, 2, 12) if bf16 else (4, 4, 8)  # bf16: fp32 master + Adam m, v
    if offload_optimizer and zero_stage > 0:
        optimizer = 0
    shard = max(1, world)
    p = shape.parameters if lora is None else lora.parameters(shape)  # what trains
    states = {
        0: (weight + grad + optimizer) * p,
        1: (weight + grad) * p + optimizer * p / shard,
        2: weight * p + (grad + optimizer) * p / shard,
        3: (weight + grad + optimizer) * p / shard,
    }[zero_stage]
    if reference:
        states += weight * p / (shard if zero_stage == 3 else 1)
    if lora is not None:
        states += frozen_bytes(shape, lora, bf16) / (shard if zero_stage == 3 else 1)
    width = 2 if bf16 else 4
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    # per token and layer: two norms' inputs (kept in fp32), q, k, v, attention output, o-proj
    # input, residual; MLP: gate and up outputs, the activation and the product
    per_layer = width * (6 * h + 2 * kv + 4 * i) + 2 * 4 * h
    logits = 4 * shape.vocabulary * min(tokens, 4096)  # the loss works in fp32 tiles, never whole
    activations = tokens * shape.layers * per_layer + logits
    checkpointed = tokens * shape.layers * width * h + tokens * per_layer + logits
    return MemoryEstimate(int(states), int(activations), int(checkpointed))


def frozen_bytes(shape: ModelShape, lora: LoraShape, bf16: bool) -> float:
    """The frozen base's weights: 16 bits each (32 without bf16), or 4-bit linear layers."""
    width = 2 if bf16 else 4
    if not lora.quantized:
        return width * shape.parameters
    linear = min(linear_parameters(shape), shape.parameters)
    return NF4_BYTES * linear + 2 * (shape.parameters - linear)


@dataclass(frozen=True)
class CheckpointingChoice:
    on: bool
    reason: str


def choose_checkpointing(setting: bool | None, estimate_: MemoryEstimate | None, gpu_bytes: int | None) -> CheckpointingChoice:
    """Unset (`None`, auto): off when the estimate without it fits in `FILL` of the GPU's memory.
    A set value wins; on CPU (no `gpu_bytes`) auto means off: host memory is not the limit there."""
    if setting is not None:
        return CheckpointingChoice(setting, "set in train.gradientCheckpointing")
    if gpu_bytes is None or estimate_ is None:
        return CheckpointingChoice(False, "auto: no GPU, memory is not the limit")
    need = estimate_.total(checkpointing=False)
    budget = int(FILL * gpu_bytes)
    if need <= budget:
        return CheckpointingChoice(False, f"auto: ~{need / GIB:.1f} GiB needed without it, {budget / GIB:.1f} GiB usable")
    with_it = estimate_.total(checkpointing=True)
    warning = "" if with_it <= budget else "; it may not fit even so: ZeRO-3 over more GPUs or train.offloadOptimizer would help"
    return CheckpointingChoice(
        True,
        f"auto: ~{need / GIB:.1f} GiB needed without it, more than the {budget / GIB:.1f} GiB usable "
        f"(~{with_it / GIB:.1f} GiB with it){warning}",
    )


def needed(estimate_: MemoryEstimate, setting: bool | None) -> int:
    """Bytes per GPU at the least the setting allows: with checkpointing unless it is set off."""
    return estimate_.total(checkpointing=setting is not False)


def does_not_fit(
    estimate_: MemoryEstimate, gpu_bytes: int, *, gradient_checkpointing: bool | None, lora: LoraShape | None, zero_stage: int, world: int,
    offload_optimizer: bool, micro_batch_size: int,
) -> str | None:  # fmt: skip
    """None when the estimate fits the whole GPU at the least memory the settings allow; else
    a sentence with how much is needed and the settings that would lower it, most effective
    first. (Checkpointing turns on at `FILL` of the GPU; refusing waits for all of it: the
    estimate's margins make a run between the two likely to fit.)"""
    need = needed(estimate_, gradient_checkpointing)
    if need <= gpu_bytes:
        return None
    settings: list[str] = []
    if gradient_checkpointing is False:
        settings.append("train.gradientCheckpointing: true (or unset)")
    if lora is None:
        settings.append("train.lora (adapters on the frozen seed: no gradients or optimizer state for its weights)")
    elif not lora.quantized:
        settings.append("train.lora.quantize: nf4 (QLoRA: the frozen base in 4 bits)")
    if zero_stage < 3:
        settings.append("train.zeroStage: 3 (shard the weights over the GPUs)")
    settings.append(f"more GPUs (train.gpusPerNode, train.nodes: {world} now)" if zero_stage == 3 else "more GPUs with train.zeroStage 3")
    if lora is None and not offload_optimizer:
        settings.append("train.offloadOptimizer: true")
    if micro_batch_size > 1:
        settings.append("a smaller train.microBatchSize")
    settings.append("a smaller train.maxSeqLen")
    return (
        f"training needs ~{need / GIB:.1f} GiB per GPU ({estimate_.model_states / GIB:.1f} GiB of weights and optimizer "
        f"state, the rest activations and {FIXED_OVERHEAD / GIB:.0f} GiB of overhead), more than a GPU's {gpu_bytes / GIB:.1f} GiB: "
        f"set {_either(settings)}"
    )


def _either(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
