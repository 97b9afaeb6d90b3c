"""Reading the committed locks offline with `packaging` (the PEP 751 reader pip itself uses), and
what installing an extra of pyproject.toml asks for: shared by the lock checks."""

from __future__ import annotations

import tomllib
from functools import cache

from packaging.pylock import Package, Pylock
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .support import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: The machines both locks are for: CPython 3.11 on Linux x86_64 with glibc 2.34 or newer (Ubuntu
#: 22.04, RHEL 9), the platform they were resolved on.
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
#: Where a locked artifact may come from: PyPI, and PyTorch's CPU wheels for the CPU torch alone.
PYPI = "https://files.pythonhosted.org/packages/"
PYTORCH_CPU = "https://download.pytorch.org/whl/cpu/"
#: What vLLM's CPU build asks for that the CPU lock leaves out (.ci/lock.py says why).
LEFT_OUT = ("torchvision", "torchaudio", "torchcodec", "triton")


@cache
def lock(name: str) -> Pylock:
    return Pylock.from_dict(tomllib.loads((REPO / name).read_text()))


def locked(name: str) -> dict[str, Package]:
    return {canonicalize_name(package.name): package for package in lock(name).packages}


def requirements(extra: str, seen: set[str] | None = None) -> list[Requirement]:
    """What installing `selftaught[extra]` asks for: the base dependencies and the extra's, with
    `selftaught[...]` references expanded, those whose marker excludes the target left out."""
    seen = set() if seen is None else seen
    seen.add(extra)
    project = PYPROJECT["project"]
    result = [Requirement(text) for text in project["dependencies"]] if len(seen) == 1 else []
    for text in project["optional-dependencies"][extra]:
        requirement = Requirement(text)
        if requirement.name == "selftaught":
            for inner in sorted(requirement.extras - seen):
                result += requirements(inner, seen)
        else:
            result.append(requirement)
    return [r for r in result if r.marker is None or r.marker.evaluate(TARGET)]
