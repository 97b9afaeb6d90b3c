"""How a stage process is started, and the one document it reads: the same for a pod and for a
local process, so what the local runner proves is what a Job runs. A stage process never outlives
the process that started it (the local runner, torchrun): `die_with_parent`."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping

from selftaught.api.load import parse_run
from selftaught.api.spec import API_GROUP, API_VERSION, KIND, SelfTaughtRun, SelfTaughtRunSpec
from selftaught.errors import InvalidSpec
from selftaught.pipeline.table import StageRef

#: The environment variable that carries the run to a stage process.
RUN_VARIABLE = "SELFTAUGHT_RUN"
#: torchrun's rendezvous port on the node of rank 0.
MASTER_PORT = 29500
_PR_SET_PDEATHSIG = 1


def stage_document(run: SelfTaughtRun) -> str:
    """What a stage process needs to know: the run's identity and its (accepted) spec. Also the
    run's snapshot in the store (`run.json`)."""
    return json.dumps(
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {
                "name": run.metadata.name,
                "namespace": run.metadata.namespace,
                **({"uid": run.metadata.uid} if run.metadata.uid else {}),  # tells a re-created run from its namesake
            },
            "spec": run.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        separators=(",", ":"),
    )


def read_stage_document(environ: Mapping[str, str] | None = None) -> SelfTaughtRun:
    document = (os.environ if environ is None else environ).get(RUN_VARIABLE)
    if not document:
        raise InvalidSpec(f"no run given: set {RUN_VARIABLE} (what a stage pod gets) or pass --run FILE")
    try:
        data = json.loads(document)
    except ValueError as error:
        raise InvalidSpec(f"{RUN_VARIABLE}: not JSON: {error}") from None
    return parse_run(data, source=RUN_VARIABLE)


def stage_command(
    spec: SelfTaughtRunSpec,
    ref: StageRef,
    *,
    python: str = sys.executable,
    master_addr: str = "127.0.0.1",
    master_port: int = MASTER_PORT,
    node_rank: str | int = 0,
    nproc: int | None = None,
    nnodes: int | None = None,
    shard: int | None = None,
) -> list[str]:
    """`python -m selftaught stage <name> --iteration=i` (`--shard=S`: that shard only); a training
    stage runs the same command under torchrun, one process per GPU (`node_rank`/`master_addr`
    may be shell references such as `${JOB_COMPLETION_INDEX}` in a pod's script; the local
    runner passes its own `nnodes` and `nproc`)."""
    stage = ["-m", "selftaught", "stage", ref.name, f"--iteration={ref.iteration}"]
    if ref.kind != "training":
        return [python, *stage, *([f"--shard={shard}"] if shard is not None else [])]
    train = spec.train
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes or train.nodes}",
        f"--nproc-per-node={nproc or train.gpus_per_node}",
        f"--node-rank={node_rank}",
        f"--master-addr={master_addr}",
        f"--master-port={master_port}",
        *stage,
    ]


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - an unusual libc
        return None


_PRCTL = _prctl()  # resolved before any fork: nothing to look up in a child


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Be sent `sig` when the parent process dies (no-op where the kernel has no such thing)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
