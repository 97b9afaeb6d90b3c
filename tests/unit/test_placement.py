"""Where the local runner's stage processes run on one machine, for 0, 1, 2, 4 and 8 visible GPUs,
with and without CUDA_VISIBLE_DEVICES; whether a model fits them (the arithmetic, with made-up
GPUs: none is needed); what a model's weights weigh, read without loading them."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from selftaught.api.spec import Generation, ModelSource, Train
from selftaught.engines.weights import Weights, weights_of
from selftaught.errors import DoesNotFit
from selftaught.local.placement import (
    CPU,
    HEADROOM,
    GiB,
    Machine,
    check_fit,
    generation_placement,
    training_placement,
    visible_devices,
)
from selftaught.pipeline.launch import stage_command
from selftaught.pipeline.table import StageRef

from .test_pipeline_core import _run


def _gpus(count: int, memory: float = 80 * GiB) -> Machine:
    devices = visible_devices(None, count)
    return Machine(devices, tuple(int(memory) for _ in devices))


@pytest.mark.parametrize(
    ("variable", "count", "expected"),
    [
        (None, 0, ()),
        ("0,1", 0, ()),  # a CPU build of torch finds no GPU, whatever the variable says: CPU
        (None, 1, ("0",)),
        (None, 8, tuple("01234567")),
        ("2,3,5", 3, ("2", "3", "5")),
        ("2, 3,5,", 3, ("2", "3", "5")),
        ("GPU-4b1e,GPU-9c2d", 2, ("GPU-4b1e", "GPU-9c2d")),  # UUIDs pass through to the children
        ("", 0, ()),
        ("0,7,bogus,3", 2, ("0", "7")),  # CUDA stops at the first name it cannot read
    ],
)
def test_visible_devices_are_cuda_visible_devices_as_cuda_read_it(variable, count, expected):
    assert visible_devices(variable, count) == expected


# (visible GPUs, tensorParallel) -> the GPUs of each generation process that runs at once
GENERATION = {
    (1, 1): [("0",)],
    (2, 1): [("0",), ("1",)],
    (2, 2): [("0", "1")],
    (4, 1): [("0",), ("1",), ("2",), ("3",)],
    (4, 2): [("0", "1"), ("2", "3")],
    (4, 4): [("0", "1", "2", "3")],
    (8, 1): [(str(i),) for i in range(8)],
    (8, 2): [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")],
    (8, 4): [("0", "1", "2", "3"), ("4", "5", "6", "7")],
    (8, 8): [tuple("01234567")],
}


@pytest.mark.parametrize(("gpus", "tensor_parallel"), list(GENERATION))
def test_generation_runs_one_process_per_tensor_parallel_group_of_gpus(gpus, tensor_parallel):
    placement = generation_placement(Generation(tensor_parallel=tensor_parallel, shards=8), _gpus(gpus).devices)
    assert list(placement.groups) == GENERATION[gpus, tensor_parallel]
    assert placement.at_once == gpus // tensor_parallel


def test_generation_on_cpu_is_one_process_as_always():
    assert generation_placement(Generation(tensor_parallel=1, shards=8), CPU.devices).groups == ((),)
    assert generation_placement(Generation(tensor_parallel=4, shards=8), ()).groups == ((),)  # no GPU to check it against


def test_generation_honours_cuda_visible_devices_and_runs_no_more_processes_than_shards():
    devices = visible_devices("2,3,5", 3)
    assert generation_placement(Generation(tensor_parallel=1, shards=8), devices).groups == (("2",), ("3",), ("5",))
    assert generation_placement(Generation(tensor_parallel=2, shards=8), devices).groups == (("2", "3"),)  # 5 stays idle
    assert generation_placement(Generation(tensor_parallel=1, shards=2), _gpus(8).devices).groups == (("0",), ("1",))


@pytest.mark.parametrize(("gpus", "tensor_parallel"), [(1, 2), (2, 4), (4, 8), (8, 16)])
def test_a_tensor_parallel_size_larger_than_the_machine_is_refused_before_any_work(gpus, tensor_parallel):
    with pytest.raises(DoesNotFit, match=rf"generation.tensorParallel is {tensor_parallel}, but {gpus} GPUs? (is|are) visible here"):
        generation_placement(Generation(tensor_parallel=tensor_parallel), _gpus(gpus).devices)
    with pytest.raises(DoesNotFit, match=r"visible here \(2,3,5\): lower generation.tensorParallel"):
        generation_placement(Generation(tensor_parallel=4), visible_devices("2,3,5", 3))


@pytest.mark.parametrize(("gpus", "nproc"), [(1, 1), (2, 2), (4, 4), (8, 8)])
def test_training_runs_one_worker_per_visible_gpu_up_to_the_specs_world_size(gpus, nproc):
    placement = training_placement(Train(gpus_per_node=8), _gpus(gpus).devices)
    assert (placement.nnodes, placement.nproc, placement.devices) == (1, nproc, _gpus(gpus).devices)
    assert training_placement(Train(gpus_per_node=2), _gpus(gpus).devices).nproc == min(2, gpus)


def test_training_on_one_machine_runs_the_specs_nodes_as_workers_of_one_node():
    placement = training_placement(Train(nodes=2, gpus_per_node=4), _gpus(8).devices)
    assert (placement.nnodes, placement.nproc) == (1, 8)
    limited = training_placement(Train(gpus_per_node=8), visible_devices("2,3,5", 3))
    assert (limited.nproc, limited.devices) == (3, ("2", "3", "5"))
    command = stage_command(_run().spec, StageRef("train", 1), python="python", nproc=placement.nproc, nnodes=placement.nnodes)
    assert "--nnodes=1" in command and "--nproc-per-node=8" in command


def test_training_on_cpu_is_the_specs_processes_as_always():
    placement = training_placement(Train(gpus_per_node=2, nodes=1), CPU.devices)
    assert (placement.nnodes, placement.nproc, placement.devices) == (1, 2, ())


def test_a_shard_process_runs_the_stage_command_for_its_shard():
    command = stage_command(_run().spec, StageRef("judge", 2), python="python", shard=3)
    assert command == ["python", "-m", "selftaught", "stage", "judge", "--iteration=2", "--shard=3"]


# -- does the model fit? ---------------------------------------------------------------------------

LLAMA_8B = 8_030_261_248 * 2  # bf16 bytes
LLAMA_70B = 70_553_706_496 * 2


@pytest.mark.parametrize(
    ("weights", "tensor_parallel", "memory", "utilization", "fits"),
    [
        (LLAMA_8B, 1, 80 * GiB, 0.9, True),  # 18.0 GiB needed of 72
        (LLAMA_8B, 1, 24 * GiB, 0.9, True),  # 18.0 of 21.6
        (LLAMA_8B, 1, 24 * GiB, 0.5, False),  # 18.0 of 12
        (LLAMA_8B, 2, 24 * GiB, 0.5, True),  # 9.0 of 12
        (LLAMA_70B, 1, 80 * GiB, 0.9, False),  # 157.7 of 72
        (LLAMA_70B, 2, 80 * GiB, 0.9, False),  # 78.8 of 72
        (LLAMA_70B, 4, 80 * GiB, 0.9, True),  # 39.4 of 72
        (LLAMA_70B, 2, 141 * GiB, 0.9, True),  # H200: 78.8 of 126.9
    ],
)
def test_a_model_fits_when_its_share_of_the_weights_plus_headroom_fits_what_vllm_may_take(weights, tensor_parallel, memory, utilization, fits):
    generation = Generation(tensor_parallel=tensor_parallel, gpu_memory_utilization=utilization)
    machine = _gpus(8, memory)
    assert (weights / tensor_parallel * (1 + HEADROOM) <= memory * utilization) == fits
    if fits:
        check_fit("model m", weights, generation, machine)
    else:
        with pytest.raises(DoesNotFit, match="does not fit this machine's GPUs"):
            check_fit("model m", weights, generation, machine)


def test_a_model_that_does_not_fit_says_what_it_needs_and_what_there_is():
    with pytest.raises(DoesNotFit) as error:
        check_fit("model meta-llama/Llama-3.1-70B-Instruct (models.seed)", LLAMA_70B, Generation(tensor_parallel=2), _gpus(8))
    assert str(error.value) == (
        "model meta-llama/Llama-3.1-70B-Instruct (models.seed) does not fit this machine's GPUs: at generation.tensorParallel 2 "
        "it needs about 78.8 GiB per GPU (131.4 GiB of weights / 2 GPUs, + 20% for the KV cache and activations), and a GPU "
        "here gives vLLM 72.0 GiB (80.0 GiB × generation.gpuMemoryUtilization 0.9); raise generation.tensorParallel "
        "(8 GPUs visible) or use a smaller model"
    )
    with pytest.raises(DoesNotFit, match=r"at generation.tensorParallel 1 .* use a smaller model, or a machine with more or larger GPUs$"):
        check_fit("model m", LLAMA_70B, Generation(), _gpus(1))


def test_the_smallest_gpu_decides_and_the_cpu_is_never_checked():
    mixed = Machine(("0", "1"), (80 * GiB, 16 * GiB))
    with pytest.raises(DoesNotFit, match=r"14.4 GiB \(16.0 GiB ×"):
        check_fit("model m", LLAMA_8B, Generation(), mixed)
    check_fit("model m", LLAMA_70B * 100, Generation(), CPU)


# -- what the weights weigh ------------------------------------------------------------------------


def test_served_bytes_follow_generation_dtype():
    bf16 = Weights({"BF16": 1000})
    assert (bf16.stored_bytes, bf16.served_bytes("auto"), bf16.served_bytes("float32")) == (2000, 2000, 4000)
    fp32 = Weights({"F32": 1000})
    assert (fp32.stored_bytes, fp32.served_bytes("auto"), fp32.served_bytes("bfloat16"), fp32.served_bytes("float32")) == (4000, 2000, 2000, 4000)
    quantized = Weights({"I32": 100, "F8_E4M3": 1000, "BF16": 10})  # packed int4 and fp8 tensors keep their size
    assert quantized.served_bytes("float16") == 400 + 1000 + 20


def test_a_local_models_weights_are_read_from_the_safetensors_headers(tmp_path):
    save_file({"a": np.zeros((4, 8), dtype=np.float32), "b": np.zeros(3, dtype=np.float16)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"c": np.zeros((2, 5), dtype=np.float32)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    assert weights_of(ModelSource(source=str(tmp_path))) == Weights({"F32": 42, "F16": 3})
    (tmp_path / "model-00001-of-00002.safetensors").unlink()
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    assert weights_of(ModelSource(source=str(tmp_path))) is None  # e.g. only pytorch_model.bin: not read, not checked


def test_a_hub_models_weights_come_from_its_safetensors_metadata(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import NotASafetensorsRepoError

    calls = []

    class Metadata:
        parameter_count = {"BF16": 8_030_261_248}

    def metadata(repo_id, revision=None):
        calls.append((repo_id, revision))
        if repo_id == "org/bin-only":
            raise NotASafetensorsRepoError("no safetensors")
        return Metadata()

    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", metadata)
    assert weights_of(ModelSource(source="meta-llama/Llama-3.1-8B-Instruct", revision="main")).served_bytes("auto") == LLAMA_8B
    assert weights_of(ModelSource(source="org/bin-only")) is None
    assert calls == [("meta-llama/Llama-3.1-8B-Instruct", "main"), ("org/bin-only", None)]


def test_the_cpu_workarounds_stay_on_the_cpu(monkeypatch):
    """vLLM's CPU build needs a KV-cache size in GiB and chunked prefill off; a process on a GPU
    gets vLLM's own defaults and an untouched environment."""
    import os

    import torch

    from selftaught.engines.generation import _cpu_defaults

    for name in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.setenv(name, "sentinel")
        monkeypatch.delenv(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _cpu_defaults() == {} and "VLLM_CPU_KVCACHE_SPACE" not in os.environ
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _cpu_defaults() == {"enable_chunked_prefill": False} and os.environ["VLLM_CPU_KVCACHE_SPACE"] == "1"
