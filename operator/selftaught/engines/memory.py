"""How much GPU memory one training process needs, and so whether gradient checkpointing must be
on (`train.gradientCheckpointing` unset).

Checkpointing recomputes every layer's forward in the backward pass: about a third more
arithmetic for the whole step. It is only worth paying when the activations do not fit. This is a
pure estimate, from the model's shape and the DeepSpeed settings, in the usual accounting (ZeRO
paper, Rajbhandari et al. 2020, for model states; Korthikanti et al. 2022 for activations, with
a fused attention kernel that keeps no score matrix), with a margin for what it leaves out
(CUDA context, allocator fragmentation, communication buffers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1 << 30
#: what the estimate leaves out: CUDA context, NCCL and DeepSpeed buffers, the allocator's slack
FIXED_OVERHEAD = 3 * GIB
#: the fraction of the GPU's memory the estimate may fill before checkpointing turns on
FILL = 0.85


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
) -> MemoryEstimate:
    """`tokens`: the most tokens one micro batch holds (micro batch size x longest example, or the
    packed length). `reference`: a frozen copy of the weights beside them (DPO's reference
    model; sharded like the weights under ZeRO-3)."""
    p = shape.parameters
    weight, grad, optimizer = (2, 2, 12) if bf16 else (4, 4, 8)  # bf16: fp32 master + Adam m, v
    if offload_optimizer and zero_stage > 0:
        optimizer = 0
    shard = max(1, world)
    states = {
        0: (weight + grad + optimizer) * p,
        1: (weight + grad) * p + optimizer * p / shard,
        2: weight * p + (grad + optimizer) * p / shard,
        3: (weight + grad + optimizer) * p / shard,
    }[zero_stage]
    if reference:
        states += weight * p / (shard if zero_stage == 3 else 1)
    width = 2 if bf16 else 4
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    # per token and layer: two norms' inputs (kept in fp32), q, k, v, attention output, o-proj
    # input, residual; MLP: gate and up outputs, the activation and the product
    per_layer = width * (6 * h + 2 * kv + 4 * i) + 2 * 4 * h
    logits = 4 * shape.vocabulary * min(tokens, 4096)  # the loss works in fp32 tiles, never whole
    activations = tokens * shape.layers * per_layer + logits
    checkpointed = tokens * shape.layers * width * h + tokens * per_layer + logits
    return MemoryEstimate(int(states), int(activations), int(checkpointed))


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
