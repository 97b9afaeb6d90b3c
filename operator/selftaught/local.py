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
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selftaught.api.changes import unsafe_changes
from selftaught.api.load import SpecError
from selftaught.api.spec import SelfTaughtRun, SelfTaughtRunSpec
from selftaught.controller.planner import plan
from selftaught.controller.progress import Progress, iteration_summaries, scan
from selftaught.engines.launch import torchrun_command
from selftaught.stages.context import run_store
from selftaught.store import Store
from selftaught.store.layout import RUN_SNAPSHOT, StageRef


class StageFailed(RuntimeError):
    def __init__(self, stage: StageRef, reason: str, message: str):
        super().__init__(f"{stage.label} failed ({reason}): {message}")
        self.stage, self.reason, self.message = stage, reason, message


@dataclass
class RunResult:
    seconds: float
    stages_run: list[str] = field(default_factory=list)
    iterations: list[dict[str, Any]] = field(default_factory=list)
    store: str = ""


def run_document(run: SelfTaughtRun) -> str:
    return run.model_dump_json(by_alias=True, exclude={"status"}, exclude_none=True)


def accept_spec(store: Store, run: SelfTaughtRun) -> None:
    """Record the spec on first start; on a restart refuse edits that would not match the data
    already produced (the operator reports the same refusal as a condition)."""
    if not store.exists(RUN_SNAPSHOT):
        store.write_text(RUN_SNAPSHOT, run_document(run))
        return
    accepted = SelfTaughtRunSpec.model_validate(json.loads(store.read_text(RUN_SNAPSHOT))["spec"])
    refused = unsafe_changes(accepted, run.spec)
    if refused:
        raise SpecError(
            f"{store.url(RUN_SNAPSHOT)}: this run already started with another spec; these fields "
            f"cannot change mid-run: {', '.join(refused)} (use a new metadata.name for a new run)"
        )
    store.write_text(RUN_SNAPSHOT, run_document(run))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stage_command(run: SelfTaughtRun, ref: StageRef) -> list[str]:
    if ref.name == "train":
        return torchrun_command(run.spec.train, ref.iteration, master_port=_free_port())
    return [sys.executable, "-m", "selftaught", "stage", ref.name, f"--iteration={ref.iteration}"]


def _run_process(run: SelfTaughtRun, ref: StageRef, log_dir: Path) -> None:
    env = dict(os.environ, SELFTAUGHT_RUN=run_document(run), PYTHONUNBUFFERED="1")
    if ref.name == "train":
        env.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    with tempfile.NamedTemporaryFile(prefix="selftaught-termination-", delete=False) as message_file:
        env["SELFTAUGHT_TERMINATION_MESSAGE_PATH"] = message_file.name
    log_path = log_dir / f"{ref.label}.log"
    try:
        with log_path.open("ab") as log:
            code = subprocess.call(stage_command(run, ref), env=env, stdout=log, stderr=subprocess.STDOUT)
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


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def describe(ref: StageRef, progress: Progress) -> str:
    manifest = progress.manifests[ref]
    details = ", ".join(f"{k} {v}" for k, v in manifest.summary.items() if k != "scoreboard")
    return f"{details} ({manifest.seconds:.1f}s)"


def run_local(run: SelfTaughtRun, *, echo: Callable[[str], None] = print, log_dir: Path | None = None) -> RunResult:
    started = time.monotonic()
    store = run_store(run)
    accept_spec(store, run)
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
    header = f"{'iter':>4}  {'tried':>6}  {'kept':>6}  {'keep%':>6}  {'accuracy':>8}  {'pos-cons':>8}  checkpoint"
    lines.append(header)
    for row in result.iterations:
        keep = row.get("keepRate")
        lines.append(
            f"{row['iteration']:>4}  {_fmt(row.get('tried'))}  {_fmt(row.get('kept'))}  "
            f"{'' if keep is None else f'{100 * keep:5.1f}%':>6}  {_fmt(row.get('accuracy'), 8, '.3f')}  "
            f"{_fmt(row.get('positionConsistent'), 8, '.3f')}  {row.get('checkpoint') or ''}"
        )
    return "\n".join(lines)


def _fmt(value: Any, width: int = 6, spec: str = "") -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"
