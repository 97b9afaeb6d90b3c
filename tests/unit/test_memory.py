"""Gradient checkpointing on only when the activations do not fit (`train.gradientCheckpointing` unset)."""

from __future__ import annotations

from types import SimpleNamespace

from selftaught.engines.memory import GIB, ModelShape, choose_checkpointing, estimate, shape_for_size

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
