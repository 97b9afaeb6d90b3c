"""Whether the GPUs a stage's pod was given can be used, asked once at the stage's start.

A pod that requests `nvidia.com/gpu` gets devices from the device plugin, but CUDA may still be
unusable in it: a driver older than the image's CUDA needs, a node whose container runtime is not
the nvidia one. torch then says `torch.cuda.is_available() == False` and everything runs on CPU,
for days, holding the GPUs. The operator tells the stage how many GPUs its pod asked for
(`GPUS_VARIABLE`); the stage process fails at once when CUDA cannot give it that many, with the
words torch, the driver and the runtime left (`CudaUnavailable`, permanent).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from selftaught.errors import GPUS_VARIABLE, CudaUnavailable

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def requested_gpus() -> int:
    try:
        return max(int(os.environ.get(GPUS_VARIABLE, "0") or 0), 0)
    except ValueError:
        return 0


def check_cuda(expected: int) -> None:
    """Raise `CudaUnavailable` unless CUDA sees at least `expected` GPUs."""
    if expected <= 0:
        return
    import torch

    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:  # torch words a driver problem as a warning
        warnings.simplefilter("always")
        try:
            available = torch.cuda.is_available()
            count = torch.cuda.device_count() if available else 0
            if available:
                torch.cuda.init()
        except RuntimeError as error:  # e.g. "Found no NVIDIA driver on your system"
            available, count = False, 0
            said.append(str(error))
    said += [str(w.message) for w in caught if "cuda" in str(w.message).lower() or "driver" in str(w.message).lower()]
    if available and count >= expected:
        return
    facts = [
        f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none (a CPU build)'}",
        f"NVIDIA_VISIBLE_DEVICES={os.environ.get('NVIDIA_VISIBLE_DEVICES', '(unset: no nvidia runtime put devices here)')}",
    ]
    try:
        facts.append(f"driver: {DRIVER_VERSION_FILE.read_text().splitlines()[0].strip()}")
    except (OSError, IndexError):
        facts.append(f"driver: {DRIVER_VERSION_FILE} is missing (no NVIDIA driver is visible in the container)")
    seen = f"CUDA sees {count} GPU(s)" if available else "CUDA is not available"
    raise CudaUnavailable(
        f"the pod asked for {expected} GPU(s) but {seen}; {'; '.join(facts)}"
        + (f"; {' / '.join(dict.fromkeys(said))}" if said else "")
        + ". Check the node's driver against the image's CUDA and that its container runtime is nvidia (runtimeClassName)"
    )
