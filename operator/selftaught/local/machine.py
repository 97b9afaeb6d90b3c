"""What GPUs this machine gives the local runner: their CUDA_VISIBLE_DEVICES names, memory and kind.

The runner itself never initializes CUDA (every byte of every GPU is its stage processes'): the
count comes from `torch.cuda.device_count()`, which asks the driver without creating a context,
and each GPU's memory from a short child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from selftaught.errors import SelftaughtError
from selftaught.local.placement import CPU, Machine, visible_devices

_MEMORY = (
    "import json, torch\n"
    "gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]\n"
    "print(json.dumps([[gpu.total_memory, gpu.name] for gpu in gpus]))\n"
)


def device_count() -> int:
    """The GPUs CUDA finds (after CUDA_VISIBLE_DEVICES); 0 without torch or without a CUDA build."""
    try:
        import torch
    except ImportError:  # pragma: no cover - the operator image: no stage runs there
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def probe() -> Machine:
    """This machine's GPUs, as CUDA_VISIBLE_DEVICES restricts them; CPU when there are none."""
    devices = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), device_count())
    if not devices:
        return CPU
    result = subprocess.run([sys.executable, "-c", _MEMORY], capture_output=True, text=True, timeout=300, check=False)
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
        memory, names = tuple(int(m) for m, _ in found), tuple(str(n) for _, n in found)
    except (ValueError, IndexError, TypeError):
        raise SelftaughtError(f"could not read the GPUs' memory: {(result.stderr or result.stdout).strip()[-1000:]}") from None
    return Machine(devices=devices[: len(memory)], memory=memory[: len(devices)], names=names[: len(devices)])
