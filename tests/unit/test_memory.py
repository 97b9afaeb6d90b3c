"""Gradient checkpointing on only when the activations do not fit (`train.gradientCheckpointing` unset)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from selftaught.api.spec import LORA_TARGETS
from selftaught.engines.adapters import VLLM_RANKS, vllm_max_rank
from selftaught.engines.memory import GIB, LoraShape, ModelShape, choose_checkpointing, does_not_fit, estimate, shape_for_size

H200, H100, L40S = 141 * GIB, 80 * GIB, 48 * GIB
TINYLLAMA = ModelShape(1_100_000_000, 22, 2048, 5632, 256, 32000)  # the shape the issue measured
LLAMA_8B = ModelShape(8_030_000_000, 32, 4096, 14336, 1024, 128256)


def state(shape: ModelShape, tokens: int, zero: int = 2, world: int = 1, offload: bool = False):
    return estimate(shape, tokens=tokens, zero_stage=zero, world=world, offload_optimizer=offload, bf16=True)


def test_a_1b_model_on_one_h200_trains_without_checkpointing():
    choice = choose_checkpointing(None, state(TINYLLAMA, 4096), H200)
    assert not choice.on and "auto" in choice.reason


def test_an_8b_model_on_one_80gb_gpu_needs_it_and_the_reason_says_how_much():
    mem = state(LLAMA_8B, 8192, offload=True)
    choice = choose_checkpointing(None, mem, H100)
    assert choice.on
    assert "GiB needed without it" in choice.reason and "may not fit" not in choice.reason
    assert mem.total(checkpointing=True) < mem.total(checkpointing=False)


def test_a_model_too_big_even_with_it_is_said_so():
    choice = choose_checkpointing(None, state(LLAMA_8B, 8192), H100)  # 16 bytes a parameter on one GPU
    assert choice.on and "may not fit even so" in choice.reason


def test_zero3_across_eight_gpus_shards_the_model_states():
    one, eight = state(LLAMA_8B, 4096, zero=3, world=1), state(LLAMA_8B, 4096, zero=3, world=8)
    assert eight.model_states * 8 == one.model_states
    assert eight.activations == one.activations  # every GPU holds its own micro batch's activations


def test_offloading_the_optimizer_leaves_weights_and_gradients_on_the_gpu():
    kept = state(LLAMA_8B, 4096, zero=2, offload=False)
    offloaded = state(LLAMA_8B, 4096, zero=2, offload=True)
    assert offloaded.model_states == 4 * LLAMA_8B.parameters  # bf16 weights + bf16 gradients
    assert kept.model_states == 16 * LLAMA_8B.parameters


def test_a_set_value_wins_and_cpu_never_checkpoints_on_auto():
    assert choose_checkpointing(True, state(TINYLLAMA, 128), H200).on
    assert not choose_checkpointing(False, state(LLAMA_8B, 65536), L40S).on
    assert not choose_checkpointing(None, state(LLAMA_8B, 65536), None).on


def test_longer_micro_batches_tip_the_choice():
    small, large = state(LLAMA_8B, 1024, zero=3, world=8), state(LLAMA_8B, 131072, zero=3, world=8)
    assert not choose_checkpointing(None, small, H100).on
    assert choose_checkpointing(None, large, H100).on


def test_the_shape_is_read_from_a_transformers_config_with_grouped_query_attention():
    config = SimpleNamespace(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             num_hidden_layers=32, intermediate_size=14336, vocab_size=128256)  # fmt: skip
    shape = ModelShape.of(config, 8_030_000_000)
    assert (shape.kv_dim, shape.layers, shape.intermediate) == (1024, 32, 14336)


def test_a_size_alone_gets_the_nearest_known_shape():
    assert shape_for_size(7.6e9).layers == 32 and shape_for_size(7.6e9).parameters == 7_600_000_000
    assert shape_for_size(72e9).hidden == 8192


def test_the_generation_settings_a_gpu_user_tunes_reach_vllm_and_the_cpu_build_keeps_its_limits():
    from selftaught.api.spec import Generation
    from selftaught.engines.generation import engine_options

    tuned = Generation(max_num_seqs=512, max_num_batched_tokens=16384)
    assert engine_options(tuned, {}) == {"enable_chunked_prefill": True, "max_num_seqs": 512, "max_num_batched_tokens": 16384}
    assert engine_options(Generation(), {}) == {"enable_chunked_prefill": True}  # vLLM's own defaults otherwise
    assert engine_options(tuned, {"enable_chunked_prefill": False})["enable_chunked_prefill"] is False  # CPU build


# -- LoRA and QLoRA: a frozen base, optimizer state for the adapters only -------------------------

LLAMA_70B = shape_for_size(70e9)
ADAPTERS = LoraShape(16, LORA_TARGETS)  # train.lora's defaults: rank 16 on every projection
L4 = int(22.5 * GIB)  # a 24 GB card, as CUDA counts it


def lora_state(shape, tokens, lora, zero=3, world=1):
    return estimate(shape, tokens=tokens, zero_stage=zero, world=world, offload_optimizer=False, bf16=True, lora=lora)


def test_the_adapters_of_an_8b_llama_are_r_times_the_widths_of_every_projection():
    # per layer: q and o 4096+4096, k and v 4096+1024, gate and up 4096+14336, down 14336+4096
    assert ADAPTERS.parameters(LLAMA_8B) == 16 * 32 * (2 * 8192 + 2 * 5120 + 3 * 18432) == 41_943_040
    assert LoraShape(16, ("all-linear",)).parameters(LLAMA_8B) == ADAPTERS.parameters(LLAMA_8B)
    assert LoraShape(8, ("q_proj", "v_proj")).parameters(LLAMA_8B) == 8 * 32 * (8192 + 5120)


def test_a_70b_lora_fits_one_node_of_eight_80gb_gpus_where_full_fine_tuning_does_not():
    lora, full = lora_state(LLAMA_70B, 4096, ADAPTERS, world=8), lora_state(LLAMA_70B, 4096, None, world=8)
    assert lora.model_states < 17.5 * GIB  # the frozen bf16 base (140 GB) over 8 GPUs, and 0.4 GiB of adapter state
    assert does_not_fit(lora, H100, gradient_checkpointing=None, lora=ADAPTERS, zero_stage=3, world=8, offload_optimizer=False, micro_batch_size=1) is None
    assert choose_checkpointing(None, lora, H100).on  # 80 layers of 4K-token activations need it
    message = does_not_fit(full, H100, gradient_checkpointing=None, lora=None, zero_stage=3, world=8, offload_optimizer=False, micro_batch_size=1)
    assert message is not None and message.startswith("training needs ~1") and "more than a GPU's 80.0 GiB: set train.lora" in message
    assert "more GPUs (train.gpusPerNode, train.nodes: 8 now)" in message


def test_an_8b_qlora_fits_one_24gb_gpu_and_a_16_bit_base_is_told_to_quantize():
    qlora, lora = LoraShape(16, LORA_TARGETS, quantized=True), ADAPTERS
    four_bit = lora_state(LLAMA_8B, 4096, qlora)
    assert 5 * GIB < four_bit.model_states < 6.5 * GIB  # 4-bit projections, 16-bit embeddings and head, 0.6 GiB of adapter state
    assert four_bit.total(checkpointing=True) < 0.85 * L4
    assert does_not_fit(four_bit, L4, gradient_checkpointing=None, lora=qlora, zero_stage=3, world=1, offload_optimizer=False, micro_batch_size=1) is None
    wide = lora_state(LLAMA_8B, 8192, lora)
    message = does_not_fit(wide, L4, gradient_checkpointing=None, lora=lora, zero_stage=3, world=1, offload_optimizer=False, micro_batch_size=1)
    assert message is not None and "set train.lora.quantize: nf4 (QLoRA" in message and "train.lora (" not in message


def test_checkpointing_set_off_is_the_first_thing_a_refusal_names():
    message = does_not_fit(
        lora_state(LLAMA_8B, 8192, ADAPTERS), H100 // 4, gradient_checkpointing=False, lora=ADAPTERS, zero_stage=2, world=1,
        offload_optimizer=False, micro_batch_size=2,
    )  # fmt: skip
    assert message.split("set ", 1)[1].startswith("train.gradientCheckpointing: true (or unset)")
    assert "train.zeroStage: 3" in message and "a smaller train.microBatchSize" in message


def test_the_adapter_ranks_vllm_is_built_for_are_vllms_own():
    """Read from vLLM's source (importing vLLM takes seconds): its `MaxLoRARanks`."""
    import importlib.util
    import re
    from pathlib import Path

    found = importlib.util.find_spec("vllm")
    if found is None or found.origin is None:
        pytest.skip("vLLM is not installed")
    source = (Path(found.origin).parent / "config" / "lora.py").read_text()
    ranks = re.search(r"^MaxLoRARanks = Literal\[([\d, ]+)\]", source, re.M)
    assert ranks is not None and tuple(int(rank) for rank in ranks.group(1).split(",")) == VLLM_RANKS
    assert [vllm_max_rank(r) for r in (1, 4, 8, 16, 17, 300, 512)] == [1, 8, 8, 16, 32, 320, 512]
