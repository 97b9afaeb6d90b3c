"""The embedded local default: the planner's stages as local processes, one after the other.

Each stage runs as `python -m selftaught stage ...` (training under torchrun), the very command a
pod runs, with the run passed in `SELFTAUGHT_RUN`. Progress lives only in the store, so a run
that is killed and started again resumes from the last finished stage or shard.

One runner per run: the runner holds the run's lease (`pipeline/lease.py`), stops the current
stage's whole process tree when it is stopped itself, and keeps every temporary file of its
stages in one scratch folder it empties after each stage and on every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
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
from selftaught.pipeline import subprocesses
from selftaught.pipeline.launch import RUN_VARIABLE, stage_command, stage_document
from selftaught.pipeline.lease import Lease
from selftaught.pipeline.planner import plan
from selftaught.pipeline.process import TERMINATION_MESSAGE_VARIABLE
from selftaught.pipeline.progress import Progress, iteration_summaries, scan, skipped_summary
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store import Store


class Interrupted(SelftaughtError):
    """The runner was asked to stop (SIGTERM, SIGHUP); its stage processes have stopped."""

    reason = "Interrupted"

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


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
    #: one line per stage that skipped bad input records (onBadRecord: skip)
    skipped: list[str] = field(default_factory=list)


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


def _run_process(run: SelfTaughtRun, ref: StageRef, log_dir: Path, scratch: Path, lease: Lease | None = None) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(scratch))  # the stage's temporary files stay in scratch
    env[RUN_VARIABLE] = stage_document(run)
    if ref.kind == "training":  # torchrun's rendezvous on a free port: runs may share the machine
        env.setdefault("DS_ACCELERATOR", "cuda" if _has_cuda() else "cpu")
        command = stage_command(run.spec, ref, master_port=_free_port())
    else:
        command = stage_command(run.spec, ref)
    message_file = scratch / f"{ref.label}.termination"
    message_file.unlink(missing_ok=True)
    env[TERMINATION_MESSAGE_VARIABLE] = str(message_file)
    log_path = log_dir / f"{ref.label}.log"
    with log_path.open("ab") as log:
        process = subprocesses.start(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            code = _wait(process, lease)
        except BaseException:  # Ctrl-C, SIGTERM, a lost lease: the whole stage tree stops with us
            with subprocesses.shielded():
                subprocesses.stop_tree(process)
            raise
    if code != 0:
        text = message_file.read_text().strip() if message_file.exists() else ""
        try:
            detail = json.loads(text)
            reason, message = detail["reason"], detail["message"]
        except (ValueError, KeyError):
            reason, message = "StageFailed", text or f"exit code {code}"
        raise StageFailed(ref, reason, f"{message} (log: {log_path})")


def _wait(process: subprocess.Popen, lease: Lease | None) -> int:
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if lease is not None and lease.lost is not None:
                raise lease.lost from None


def work_folder(run: SelfTaughtRun, store_uri: str) -> Path:
    """This machine's scratch space for one run (one per store folder: the lease makes it ours)."""
    digest = hashlib.sha256(store_uri.encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"selftaught-{run.metadata.namespace}-{run.metadata.name}-{digest}"


def describe(ref: StageRef, progress: Progress) -> str:
    manifest = progress.manifests[ref]
    details = ", ".join(f"{k} {v}" for k, v in manifest.summary.items())
    return f"{details} ({manifest.seconds:.1f}s)"


def run_local(run: SelfTaughtRun, *, echo: Callable[[str], None] = print, log_dir: Path | None = None) -> RunResult:
    """Run what is left of `run` here, stage after stage. Ctrl-C, SIGTERM and SIGHUP stop the
    current stage's whole process tree before `Interrupted` (or KeyboardInterrupt) propagates."""
    with subprocesses.signals_raise(Interrupted):
        store = open_run_store(run)
        with Lease(store) as lease:
            return _run_holding_lease(run, store, lease, echo, log_dir)


def _run_holding_lease(run: SelfTaughtRun, store: Store, lease: Lease, echo: Callable[[str], None], log_dir: Path | None) -> RunResult:
    started = time.monotonic()
    acceptance = accept(store, run)
    if acceptance.refused:
        raise SpecError(f"{store.url()}: this run already started with another spec; {acceptance.refusal}")
    run = run.model_copy(update={"spec": acceptance.spec})
    work = work_folder(run, store.uri)
    if log_dir is None:  # the default logs are this run's: an earlier invocation's are replaced
        log_dir = work / "logs"
        shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)  # (cli checks a --logs folder before the run starts)
    scratch = work / "tmp"
    shutil.rmtree(scratch, ignore_errors=True)  # what a killed invocation left (a trainer's checkpoint...)
    scratch.mkdir(parents=True)
    echo(f"selftaught run {run.metadata.name}: store {store.uri}, logs {log_dir}")
    result = RunResult(seconds=0.0, store=store.uri)
    try:
        while True:
            if lease.lost is not None:
                raise lease.lost
            progress = scan(store)
            step = plan(run.spec, progress.done)
            if step.finished:
                break
            ref = step.ready[0]
            echo(f"[{time.monotonic() - started:6.1f}s] {ref.label:<12} ▶ ({len(step.done)}/{step.total} stages done)")
            try:
                _run_process(run, ref, log_dir, scratch, lease)
            finally:
                _empty(scratch)  # each stage's temporary files go when it ends, however it ends
            result.stages_run.append(ref.label)
            progress = scan(store)
            echo(f"[{time.monotonic() - started:6.1f}s] {ref.label:<12} ✓ {describe(ref, progress)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = time.monotonic() - started
    result.iterations = iteration_summaries(progress, limit=1000)
    result.skipped = skipped_summary(progress)
    echo(format_summary(result))
    return result


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


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
    if result.skipped:
        lines += ["", "skipped input records (onBadRecord: skip):", *(f"  {line}" for line in result.skipped)]
    return "\n".join(lines)


def _fmt(value: Any, width: int = 6, spec: str = "") -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"
