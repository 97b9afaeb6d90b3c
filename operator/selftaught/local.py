"""The embedded local default: the planner's stages as local processes, one after the other.

Each stage runs as `python -m selftaught stage ...` (training under torchrun), the very command a
pod runs, with the run passed in `SELFTAUGHT_RUN`. Progress lives only in the store, so a run
that is killed and started again resumes from the last finished stage or shard.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selftaught.api.load import SpecError
from selftaught.api.spec import SelfTaughtRun
from selftaught.errors import SelftaughtError
from selftaught.pipeline.launch import RUN_VARIABLE, stage_command, stage_document
from selftaught.pipeline.planner import plan
from selftaught.pipeline.process import TERMINATION_MESSAGE_VARIABLE
from selftaught.pipeline.progress import Progress, iteration_summaries, scan
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.table import StageRef


class StageFailed(SelftaughtError):
    """A stage process of the local run failed; `reason` is the stage's own."""

    def __init__(self, stage: StageRef, reason: str, message: str):
        super().__init__(f"run {stage.label} failed, reason {reason}: {message}", reason=reason)
        self.stage, self.message = stage, message


@dataclass
class RunResult:
    seconds: float
    stages_run: list[str] = field(default_factory=list)
    iterations: list[dict[str, Any]] = field(default_factory=list)
    store: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def _run_process(run: SelfTaughtRun, ref: StageRef, log_dir: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env[RUN_VARIABLE] = stage_document(run)
    if ref.kind == "training":  # torchrun's rendezvous on a free port: runs may share the machine
        env.setdefault("DS_ACCELERATOR", "cuda" if _has_cuda() else "cpu")
        command = stage_command(run.spec, ref, master_port=_free_port())
    else:
        command = stage_command(run.spec, ref)
    with tempfile.NamedTemporaryFile(prefix="selftaught-termination-", delete=False) as message_file:
        env[TERMINATION_MESSAGE_VARIABLE] = message_file.name
    log_path = log_dir / f"{ref.label}.log"
    try:
        with log_path.open("ab") as log:
            code = subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            text = Path(message_file.name).read_text().strip()
            try:
                detail = json.loads(text)
                reason, message = detail["reason"], detail["message"]
            except (ValueError, KeyError):
                reason, message = "StageFailed", text or f"exit code {code}"
            raise StageFailed(ref, reason, f"{message} (log: {log_path})")
    finally:
        Path(message_file.name).unlink(missing_ok=True)


def describe(ref: StageRef, progress: Progress) -> str:
    manifest = progress.manifests[ref]
    details = ", ".join(f"{k} {v}" for k, v in manifest.summary.items())
    return f"{details} ({manifest.seconds:.1f}s)"


def run_local(run: SelfTaughtRun, *, echo: Callable[[str], None] = print, log_dir: Path | None = None) -> RunResult:
    started = time.monotonic()
    store = open_run_store(run)
    acceptance = accept(store, run)
    if acceptance.refused:
        raise SpecError(f"{store.url()}: this run already started with another spec; {acceptance.refusal}")
    run = run.model_copy(update={"spec": acceptance.spec})
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"selftaught-{run.metadata.name}-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    echo(f"selftaught run {run.metadata.name}: store {store.uri}, logs {log_dir}")
    result = RunResult(seconds=0.0, store=store.uri)
    while True:
        progress = scan(store)
        step = plan(run.spec, progress.done)
        if step.finished:
            break
        ref = step.ready[0]
        echo(f"[{time.monotonic() - started:6.1f}s] {ref.label:<12} ▶ ({len(step.done)}/{step.total} stages done)")
        _run_process(run, ref, log_dir)
        result.stages_run.append(ref.label)
        progress = scan(store)
        echo(f"[{time.monotonic() - started:6.1f}s] {ref.label:<12} ✓ {describe(ref, progress)}")
    result.seconds = time.monotonic() - started
    result.iterations = iteration_summaries(progress, limit=1000)
    echo(format_summary(result))
    return result


def format_summary(result: RunResult) -> str:
    lines = [f"\nrun finished in {result.seconds:.1f}s; results in {result.store}", ""]
    header = f"{'iter':>4}  {'tried':>6}  {'kept':>6}  {'keep%':>6}  {'accuracy':>8}  {'overall':>8}  {'pos-cons':>8}  checkpoint"
    lines.append(header)
    for row in result.iterations:
        keep = row.get("keepRate")
        lines.append(
            f"{row['iteration']:>4}  {_fmt(row.get('tried'))}  {_fmt(row.get('kept'))}  "
            f"{'' if keep is None else f'{100 * keep:5.1f}%':>6}  {_fmt(row.get('accuracy'), 8, '.3f')}  {_fmt(row.get('overall'), 8, '.3f')}  "
            f"{_fmt(row.get('positionConsistent'), 8, '.3f')}  {row.get('checkpoint') or ''}"
        )
    return "\n".join(lines)


def _fmt(value: Any, width: int = 6, spec: str = "") -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"
