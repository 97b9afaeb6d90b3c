"""How a training process group is started: one place for torchrun's arguments, shared by the
training Job builder and the local runner."""

from __future__ import annotations

import sys

from selftaught.api.spec import Train


def torchrun_command(
    train: Train,
    iteration: int,
    *,
    nproc: int | None = None,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
    node_rank: str | int = 0,
    python: str | None = None,
) -> list[str]:
    """`torchrun ... -m selftaught stage train --iteration i`; `node_rank` may be a shell
    reference such as `$(JOB_COMPLETION_INDEX)` in a pod spec."""
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={train.nodes}",
        f"--nproc-per-node={nproc or train.gpus_per_node}",
        f"--node-rank={node_rank}",
        f"--master-addr={master_addr}",
        f"--master-port={master_port}",
        "-m",
        "selftaught",
        "stage",
        "train",
        f"--iteration={iteration}",
    ]
