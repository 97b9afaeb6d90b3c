"""Where the local runner's stage processes run on one machine: what Kubernetes decides for the
operator (a pod per shard, GPUs per pod), decided here from the visible GPUs. Pure: the machine
is passed in (`local/machine.py` looks at it). The cost estimate is told the same (`local_executor`).

- generation: one vLLM process per `generation.tensorParallel` GPUs, so a machine with more GPUs
  than the model needs runs several shards at once (8 GPUs at tensor parallel 2: 4 shard
  processes); further shards wait for a free group of GPUs.
- training: one torchrun worker per GPU, `train.nodes × train.gpusPerNode` of them (the spec's
  world size) on this one node, fewer when fewer GPUs are visible.
- no GPU: one process per stage, on the CPU, as the local default always ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selftaught.api.spec import Generation, SelfTaughtRunSpec, Train
from selftaught.errors import DoesNotFit
from selftaught.views.estimate import Executor, kind_of_device

GiB = 1024**3
#: What vLLM needs beyond the weights, as a fraction of them: the KV cache for at least one
#: `maxModelLen` sequence, activations and CUDA graphs. 20% covers an 8B model at a 16K context
#: (2 GiB of KV cache for 15 GiB of weights) with room; vLLM itself refuses a model that leaves
#: no KV cache, but only after the download and the load.
HEADROOM = 0.2


@dataclass(frozen=True)
class Machine:
    """The GPUs the runner may hand out (CUDA_VISIBLE_DEVICES names) and each one's memory in
    bytes, in the same order; no devices means the CPU."""

    devices: tuple[str, ...] = ()
    memory: tuple[int, ...] = ()
    #: the devices' names (`NVIDIA H100 80GB HBM3`), for pricing the run
    names: tuple[str, ...] = ()


CPU = Machine()


def visible_devices(cuda_visible_devices: str | None, device_count: int) -> tuple[str, ...]:
    """The names a stage process's CUDA_VISIBLE_DEVICES may list: the runner's own list (indices,
    UUIDs or MIG names, whatever CUDA read) cut to the `device_count` devices CUDA found in it,
    or 0 .. device_count-1 when the variable is unset."""
    if device_count <= 0:
        return ()
    if cuda_visible_devices is None:
        return tuple(str(index) for index in range(device_count))
    return tuple(name.strip() for name in cuda_visible_devices.split(",") if name.strip())[:device_count]


@dataclass(frozen=True)
class GenerationPlacement:
    """One entry per process that may run at once: the GPUs it sees. `((),)` is one CPU process."""

    groups: tuple[tuple[str, ...], ...]

    @property
    def at_once(self) -> int:
        return len(self.groups)


def generation_placement(generation: Generation, devices: Sequence[str]) -> GenerationPlacement:
    """`generation.tensorParallel` GPUs per vLLM process, as many processes as fit the GPUs (never
    more than there are shards). Raises DoesNotFit when one process needs more GPUs than are
    visible."""
    if not devices:
        return GenerationPlacement(((),))
    size = generation.tensor_parallel
    if size > len(devices):
        raise DoesNotFit(
            f"generation.tensorParallel is {size}, but {_count(len(devices))} {'is' if len(devices) == 1 else 'are'} "
            f"visible here ({','.join(devices)}): lower generation.tensorParallel, or make more GPUs visible"
        )
    count = min(len(devices) // size, generation.shards)
    return GenerationPlacement(tuple(tuple(devices[i * size : (i + 1) * size]) for i in range(count)))


@dataclass(frozen=True)
class TrainingPlacement:
    """torchrun's `--nnodes` and `--nproc-per-node`, and the GPUs its workers see (none on CPU)."""

    nnodes: int
    nproc: int
    devices: tuple[str, ...] = ()


def training_placement(train: Train, devices: Sequence[str]) -> TrainingPlacement:
    """On GPUs, one worker per GPU on this one node: `train.nodes × train.gpusPerNode` workers
    (the world size the spec asks for), or every visible GPU when there are fewer. On CPU, the
    spec's numbers as they are (`gpusPerNode` gloo processes)."""
    if not devices:
        return TrainingPlacement(nnodes=train.nodes, nproc=train.gpus_per_node)
    nproc = min(train.nodes * train.gpus_per_node, len(devices))
    return TrainingPlacement(nnodes=1, nproc=nproc, devices=tuple(devices[:nproc]))


def needed_per_gpu(weight_bytes: int, tensor_parallel: int) -> float:
    """Bytes one GPU of a tensor-parallel group needs: its share of the weights plus HEADROOM."""
    return weight_bytes / tensor_parallel * (1 + HEADROOM)


def check_fit(subject: str, weight_bytes: int, generation: Generation, machine: Machine) -> None:
    """Raise DoesNotFit, saying how much memory is needed and how much there is, when `subject`'s
    weights (as served) do not fit its tensor-parallel group: vLLM takes `gpuMemoryUtilization`
    of each GPU, and the smallest visible GPU may be any process's."""
    if not machine.memory:
        return
    size = generation.tensor_parallel
    needed = needed_per_gpu(weight_bytes, size)
    smallest = min(machine.memory)
    usable = smallest * generation.gpu_memory_utilization
    if needed <= usable:
        return
    hint = (
        f"raise generation.tensorParallel ({_count(len(machine.devices))} visible) or use a smaller model"
        if size < len(machine.devices)
        else "use a smaller model, or a machine with more or larger GPUs"
    )
    raise DoesNotFit(
        f"{subject} does not fit this machine's GPUs: at generation.tensorParallel {size} it needs about "
        f"{needed / GiB:.1f} GiB per GPU ({weight_bytes / GiB:.1f} GiB of weights / {_count(size)}, + {HEADROOM:.0%} "
        f"for the KV cache and activations), and a GPU here gives vLLM {usable / GiB:.1f} GiB "
        f"({smallest / GiB:.1f} GiB × generation.gpuMemoryUtilization {generation.gpu_memory_utilization:g}); {hint}"
    )


def cuda_visible_devices(devices: Sequence[str]) -> str:
    """The CUDA_VISIBLE_DEVICES value of a process that sees `devices`."""
    return ",".join(devices)


def _count(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def local_executor(spec: SelfTaughtRunSpec, machine: Machine) -> Executor:
    """How `selftaught run` places stages on this machine (the placement above), as the cost estimate counts it."""
    if not machine.devices:
        return Executor("local", 1, False, 0, 0)
    groups = generation_placement(spec.generation, machine.devices).at_once
    training = training_placement(spec.train, machine.devices)
    return Executor("local", groups, groups > 1, spec.generation.tensor_parallel, training.nproc)


def machine_kind(machine: Machine) -> str:
    """The GPU kind of this machine's GPUs (cpu without any; H100 for a kind the table lacks)."""
    if not machine.devices:
        return "cpu"
    return next((kind for name in machine.names if (kind := kind_of_device(name))), "H100")
