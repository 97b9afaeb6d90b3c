"""The embedded local default: the planner's stages as local processes, one after the other.

Each stage runs as `python -m selftaught stage ...` (training under torchrun), the very command a
pod runs, with the run passed in `SELFTAUGHT_RUN`. Progress lives only in the store, so a run
that is killed and started again resumes from the last finished stage or shard.

One runner per run: the runner holds the run's lease (`local/lease.py`), stops the current
stage's whole process trees when it is stopped itself, and keeps every temporary file of its
stages in one scratch folder it empties after each stage and on every start.

On a GPU machine the stages use the visible GPUs (`local/placement.py`): a generation stage
runs one process per shard, as many at once as groups of `generation.tensorParallel` GPUs fit,
then once more to reduce; training runs one torchrun worker per GPU. A model too large for its
GPUs, or a tensor-parallel size larger than the machine, is refused before any work. On CPU
every stage is one process.

A stage stopped with the runner (Ctrl-C, SIGTERM) loses the work since it last saved: the runner
records that disruption in the store as the operator does (`store/disruptions.py`), so
`selftaught status` shows it however the run goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from selftaught.api.spec import SelfTaughtRun
from selftaught.engines.models import cache_root
from selftaught.engines.weights import weights_of
from selftaught.errors import MESSAGE_LIMIT, TERMINATION_MESSAGE_VARIABLE, Failure, InvalidSpec, Reason, SelftaughtError, clip, decode
from selftaught.local import subprocesses
from selftaught.local.lease import Lease
from selftaught.local.machine import probe
from selftaught.local.placement import (
    CPU,
    GiB,
    Machine,
    check_fit,
    cuda_visible_devices,
    generation_placement,
    local_executor,
    machine_kind,
    training_placement,
)
from selftaught.pipeline.launch import RUN_VARIABLE, stage_command, stage_document
from selftaught.pipeline.planner import plan
from selftaught.pipeline.reuse import adopt_or_none, lineage_of, planned_reuse, record, record_all
from selftaught.pipeline.runstore import accept, open_run_store
from selftaught.pipeline.scan import iteration_summaries, scan
from selftaught.pipeline.table import StageRef
from selftaught.store import StorageUnavailable, Store
from selftaught.store.disruptions import Cause, DisruptionRecord, lost_work, write_disruption
from selftaught.store.failures import FailureRecord, write_failure
from selftaught.store.layout import PROGRESS, disruption_key, failure_key, log_key, progress_key
from selftaught.store.progress import ProgressRecord, read_progress
from selftaught.views.display import StageDisplay
from selftaught.views.estimate import Inputs, estimate, measure, with_reuse
from selftaught.views.eta import completion
from selftaught.views.html_report import write_report
from selftaught.views.live import duration, watch_view
from selftaught.views.overview import brief_stage, iteration_table, skipped_summary
from selftaught.views.plan_text import format_plan, plan_inputs

log = logging.getLogger(__name__)


class Interrupted(SelftaughtError):
    """The runner was asked to stop (SIGTERM, SIGHUP); its stage processes have stopped."""

    reason = Reason.INTERRUPTED

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class StageFailed(SelftaughtError):
    """A stage process of the local run failed; `reason` is the stage's own."""

    def __init__(self, stage: StageRef, failure: Failure):
        super().__init__(f"run {stage.label} failed, reason {failure.reason}: {failure.message}", reason=failure.reason)
        self.stage, self.message = stage, failure.message


@dataclass
class RunResult:
    seconds: float
    stages_run: list[str] = field(default_factory=list)
    #: stages linked from an earlier run with the same key instead of run (spec.reuse)
    stages_reused: list[str] = field(default_factory=list)
    iterations: list[dict[str, Any]] = field(default_factory=list)
    store: str = ""
    #: one line per stage that skipped bad input records (onBadRecord: skip)
    skipped: list[str] = field(default_factory=list)
    #: where the run's HTML report is
    report: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class _Job:
    """One stage process to run: its command, its log, where it leaves its reason if it fails."""

    command: list[str]
    log_path: Path
    message_file: Path
    shard: int | None = None


@dataclass
class _Running:
    job: _Job
    devices: tuple[str, ...]
    process: subprocess.Popen
    log: IO[bytes]
    started_at: float = field(default_factory=time.time)
    log_offset: int = 0  #: where this process's part of its log file begins (`--logs` files are appended to)

    @property
    def name(self) -> str:
        """`local-<ms>` or `local-<ms>-shard-00003`: its log's and its failure's name in the store."""
        return f"local-{int(self.started_at * 1000)}" + ("" if self.job.shard is None else f"-shard-{self.job.shard:05d}")


def _run_stage(
    run: SelfTaughtRun,
    ref: StageRef,
    log_dir: Path,
    scratch: Path,
    lease: Lease | None = None,
    machine: Machine = CPU,
    store: Store | None = None,
    tick: Callable[[], None] | None = None,
) -> None:
    """Run what is left of one stage here: one process on CPU; on GPUs, a training stage's torchrun
    with a worker per GPU, a generation stage's unfinished shards side by side on their groups of
    GPUs, then one more process that reduces (it finds every shard done). `tick` is called every
    half second or so while they run (to show progress)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(scratch))  # the stage's temporary files stay in scratch
    env[RUN_VARIABLE] = stage_document(run)

    def job(command: list[str], shard: int | None = None) -> _Job:
        name = ref.label if shard is None else f"{ref.label}-shard-{shard}"
        return _Job(command, log_dir / f"{name}.log", scratch / f"{name}.termination", shard)

    if ref.kind == "training":  # torchrun's rendezvous on a free port: runs may share the machine
        env.setdefault("DS_ACCELERATOR", "cuda" if machine.devices else "cpu")
        # the DeepSpeed ops torch compiles on first use (the CPU communication op: ~30 s) are kept
        # per user, beside the model cache, never in a run's scratch space: built once per machine
        env.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))
        # on SIGTERM torchrun forwards it, then kills its workers after this: no sooner than we would
        env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(int(subprocesses.TRAINING_STOP_GRACE_SECONDS)))
        placement = training_placement(run.spec.train, machine.devices)
        command = stage_command(run.spec, ref, master_port=_free_port(), nproc=placement.nproc, nnodes=placement.nnodes)
        _run_jobs(ref, [job(command)], [placement.devices], env, lease, tick, store)
        return
    groups = _generation_groups(run, ref, machine)
    if ref.sharded and len(groups) > 1:
        store = store or open_run_store(run)
        pending = [s for s in range(run.spec.generation.shards) if not store.exists(ref.shard_manifest_key(s))]
        if len(pending) > 1:
            _run_jobs(ref, [job(stage_command(run.spec, ref, shard=s), s) for s in pending], groups, env, lease, tick, store)
            if store.exists(ref.manifest_key):  # the shard that finished last reduced
                return
    _run_jobs(ref, [job(stage_command(run.spec, ref))], groups[:1], env, lease, tick, store)


def _generation_groups(run: SelfTaughtRun, ref: StageRef, machine: Machine) -> tuple[tuple[str, ...], ...]:
    if ref.kind != "generation":  # select: one CPU process
        return ((),)
    return generation_placement(run.spec.generation, machine.devices).groups


def _run_jobs(
    ref: StageRef,
    jobs: Sequence[_Job],
    groups: Sequence[tuple[str, ...]],
    env: dict[str, str],
    lease: Lease | None,
    tick: Callable[[], None] | None = None,
    store: Store | None = None,
) -> None:
    """Run `jobs`, at most one per group of GPUs at a time, each seeing only its group (an empty
    group: the environment as it is). The first failure, Ctrl-C, SIGTERM or a lost lease stops
    every process tree still running; a failure raises StageFailed with that process's reason.
    Processes stopped by Ctrl-C or SIGTERM are disruptions, recorded in `store`."""
    pending, free = list(reversed(jobs)), list(reversed(groups))
    running: list[_Running] = []
    try:
        while pending or running:
            while pending and free:
                running.append(_start(pending.pop(), free.pop(), env))
            _pause(running[0].process, lease)
            if tick is not None:
                tick()
            for item in [r for r in running if r.process.poll() is not None]:
                running.remove(item)
                item.log.close()
                free.append(item.devices)
                kept = _keep_log(store, ref, item)
                if item.process.returncode != 0:
                    _record_failure(store, ref, item, kept)
                    raise _failure(ref, item.job, item.process.returncode, store.url(kept) if store is not None and kept else None)
    except BaseException as error:  # Ctrl-C, SIGTERM, a lost lease, a failed shard: every stage tree stops with us
        grace = subprocesses.TRAINING_STOP_GRACE_SECONDS if ref.kind == "training" else subprocesses.STOP_GRACE_SECONDS
        with subprocesses.shielded() as hurry:
            if ref.kind == "training" and running:
                log.warning("stopping %s: once it trains, it saves its state at its next step end before it exits (Ctrl-C again: at once)", ref.label)
            subprocesses.stop_trees([r.process for r in running], grace, hurry)
            for item in running:
                item.log.close()
                _keep_log(store, ref, item)
            if store is not None and isinstance(error, Interrupted | KeyboardInterrupt):
                _record_disruptions(store, ref, running, error)
        raise
    finally:
        for item in running:
            item.log.close()


def _start(job: _Job, devices: tuple[str, ...], env: dict[str, str]) -> _Running:
    env = dict(env, **({"CUDA_VISIBLE_DEVICES": cuda_visible_devices(devices)} if devices else {}))
    job.message_file.unlink(missing_ok=True)
    env[TERMINATION_MESSAGE_VARIABLE] = str(job.message_file)
    log = job.log_path.open("ab")
    try:
        process = subprocesses.start(job.command, env=env, stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        log.close()
        raise
    return _Running(job, devices, process, log, log_offset=log.tell())


def _pause(process: subprocess.Popen, lease: Lease | None) -> None:
    """Wait a moment for `process`; raise the lease's loss if it was lost meanwhile."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=0.5)
    if lease is not None and lease.lost is not None:
        raise lease.lost from None


def _record_disruptions(store: Store, ref: StageRef, stopped: Sequence[_Running], why: BaseException) -> None:
    """Each stage process stopped with the runner lost the work since it last saved (its progress
    object, written on its way out, says how much): recorded as the operator records a disruption
    (cause `Stopped`), for `selftaught status`. Best effort: a store that does not answer now
    loses the record, never the runner's own reason for stopping."""
    now = time.time()
    said = str(why) or "stopped by Ctrl-C (SIGINT)"
    for item in stopped:
        text = item.job.message_file.read_text().strip() if item.job.message_file.exists() else ""
        told = decode(text)
        with contextlib.suppress(StorageUnavailable):
            record = _stopped_progress(store, ref, item.job.shard)
            lost = lost_work(record, began_at=item.started_at, stopped_at=now)
            shard = record.shard if record is not None else item.job.shard or 0
            gpus = len(item.devices)
            disruption = DisruptionRecord(
                stage=ref.label,
                cause=Cause.STOPPED,
                reason=told.reason if told else Reason.INTERRUPTED,
                message=(told.message if told else f"selftaught run was {said}")[:300],
                at=now,
                executor="local",
                shards=[shard],
                **lost.costs(gpus),
            )
            write_disruption(store, disruption_key(ref.prefix, f"local-{int(now * 1000)}-{shard}"), disruption)


def _stopped_progress(store: Store, ref: StageRef, shard: int | None) -> ProgressRecord | None:
    """The progress a stopped process published last: its shard's, or for one that went through
    the shards itself (no `--shard`), the newest of those not finished."""
    if shard is not None or not ref.sharded:
        return read_progress(store, progress_key(ref.prefix, shard or 0))
    records = [record for key in store.list(f"{ref.prefix}/{PROGRESS}/") if (record := read_progress(store, key)) is not None]
    return max((record for record in records if not record.finished), key=lambda record: record.updated_at, default=None)


def _keep_log(store: Store | None, ref: StageRef, item: _Running) -> str | None:
    """What the ended process wrote to its log, copied into the run's store (`<stage>/_logs/`, one
    object per process, never overwritten), so that it outlives this runner's temporary folder and
    the next attempt: the key, or None when it could not be kept (best effort)."""
    if store is None:
        return None
    key = log_key(ref.prefix, item.name)
    try:
        with item.job.log_path.open("rb") as file:
            file.seek(item.log_offset)
            store.write_bytes(key, file.read())
    except (OSError, StorageUnavailable) as error:
        log.warning("the log of %s was not kept in the store: %s", ref.label, error)
        return None
    return key


def _told(job: _Job, code: int) -> Failure:
    """What the failed process said (its termination message), or its exit code."""
    text = job.message_file.read_text().strip() if job.message_file.exists() else ""
    return decode(text) or Failure(Reason.STAGE_FAILED, text or f"exit code {code}")


def _failure(ref: StageRef, job: _Job, code: int, log: str | None = None) -> StageFailed:
    """The failed process's reason as the runner's error, naming its log (`log`, the copy in the
    store, else the local file)."""
    failure = _told(job, code)
    shard = "" if job.shard is None else f"shard {job.shard}: "
    return StageFailed(ref, Failure(failure.reason, f"{shard}{failure.message} (log: {log or job.log_path})", failure.permanent))


def _record_failure(store: Store | None, ref: StageRef, item: _Running, kept: str | None) -> None:
    """The failed attempt in the run's store, with where its log is, for `selftaught status`
    (a local run has no status object). Best effort: a store that does not answer loses the
    record, never the runner's own error."""
    if store is None:
        return
    told = _told(item.job, item.process.returncode)
    record = FailureRecord(
        stage=ref.label, reason=str(told.reason), message=clip(told.message, MESSAGE_LIMIT), permanent=told.permanent,
        at=time.time(), shard=item.job.shard, log=kept,
    )  # fmt: skip
    with contextlib.suppress(StorageUnavailable):
        write_failure(store, failure_key(ref.prefix, item.name), record)


def check_machine(run: SelfTaughtRun, machine: Machine, echo: Callable[[str], None] = print) -> None:
    """On GPUs, refuse before any work what this machine cannot run (more tensor-parallel GPUs
    than are visible, a model its GPUs cannot hold) and say what the run will use."""
    if not machine.devices:
        return
    spec = run.spec
    generation = generation_placement(spec.generation, machine.devices)
    training = training_placement(spec.train, machine.devices)
    asked = spec.train.nodes * spec.train.gpus_per_node
    echo(
        f"GPUs {','.join(machine.devices)} ({min(machine.memory) / GiB:.0f} GiB each): generation runs "
        f"{generation.at_once} vLLM process(es) at once on {spec.generation.tensor_parallel} GPU(s) each, "
        f"training {training.nproc} worker(s)" + (f" (train.nodes × train.gpusPerNode asks for {asked})" if training.nproc < asked else "")
    )
    models = {"models.seed": spec.models.seed, **({"models.generator": spec.models.generator} if spec.models.generator else {})}
    for name, model in models.items():
        try:
            weights = weights_of(model, spec.storage)
        except SelftaughtError as error:  # the stage that loads it says so again, with its reason
            echo(f"memory check of {name} skipped: {error}")
            continue
        if weights is None:
            echo(f"memory check of {name} skipped: its size cannot be read without downloading it (no safetensors header or index)")
            continue
        check_fit(f"model {model.source} ({name})", weights.served_bytes(spec.generation.dtype), spec.generation, machine)


def local_inputs(run: SelfTaughtRun, machine: Machine) -> Inputs:
    """The cost estimate's inputs for `run` run here, on `machine` (`selftaught run`, `plan --local`)."""
    return plan_inputs(run, machine_gpu=machine_kind(machine), executor=local_executor(run.spec, machine))


def work_folder(run: SelfTaughtRun, store_uri: str) -> Path:
    """This machine's scratch space for one run (one per store folder: the lease makes it ours)."""
    digest = hashlib.sha256(store_uri.encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"selftaught-{run.metadata.namespace}-{run.metadata.name}-{digest}"


def run_local(run: SelfTaughtRun, *, echo: Callable[[str], None] = print, log_dir: Path | None = None) -> RunResult:
    """Run what is left of `run` here, stage after stage. Ctrl-C, SIGTERM and SIGHUP stop the
    current stage's whole process tree before `Interrupted` (or KeyboardInterrupt) propagates;
    Ctrl-Z pauses it with the runner."""
    with subprocesses.signals_raise(Interrupted), subprocesses.job_control():  # Ctrl-Z pauses the stages too
        store = open_run_store(run)
        with Lease(store) as lease:
            return _run_holding_lease(run, store, lease, echo, log_dir)


def _run_holding_lease(run: SelfTaughtRun, store: Store, lease: Lease, echo: Callable[[str], None], log_dir: Path | None) -> RunResult:
    started = time.monotonic()
    acceptance = accept(store, run)
    if acceptance.refused:
        raise InvalidSpec(f"{store.url()}: this run already started with another spec; {acceptance.refusal}")
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
        machine = probe()
        check_machine(run, machine, echo)  # before any work: a run this machine cannot hold stops here
        where = "on this machine (" + (f"{len(machine.devices)} GPU(s))" if machine.devices else "CPU)")
        inputs = local_inputs(run, machine)
        lineage = lineage_of(run.spec)  # spec.reuse: the stage keys, and the index of earlier runs' outputs
        progress = scan(store)
        planned = estimate(run.spec, inputs, measure(progress.manifests))
        if lineage is not None:
            record_all(lineage, progress.manifests, store)  # what this run finished before reuse was on
            planned = with_reuse(planned, planned_reuse(lineage, run.spec, progress.manifests, store))
        echo(format_plan(run.metadata.name, planned, where, inputs) + "\n")

        def stamped(text: str) -> None:
            echo(f"[{time.monotonic() - started:6.1f}s] {text}")

        while True:
            if lease.lost is not None:
                raise lease.lost
            progress = scan(store)
            step = plan(run.spec, progress.done)
            if step.finished:
                break
            ref = step.ready[0]
            left = completion(run.spec, estimate(run.spec, inputs, measure(progress.manifests)), one_at_a_time=True)
            eta = f", the run ~{duration(left.eta_seconds)} left" if left is not None else ""
            if lineage is not None and (adopted := adopt_or_none(lineage, ref, store, run.spec, stamped)) is not None:
                result.stages_reused.append(ref.label)
                stamped(f"{ref.label:<12} ↺ reused from {adopted.source} ({adopted.how}; the stage took {duration(adopted.manifest.seconds)} there)")
                continue
            echo(f"[{time.monotonic() - started:6.1f}s] {ref.label:<12} ▶ ({len(step.done)}/{step.total} stages done{eta})")
            display = StageDisplay(ref.label, stamped)
            try:
                _run_stage(run, ref, log_dir, scratch, lease, machine, store, _watcher(store, ref, run.spec.generation.shards, display, stamped))
            finally:
                display.close()
                _empty(scratch)  # each stage's temporary files go when it ends, however it ends
            result.stages_run.append(ref.label)
            progress = scan(store)
            if lineage is not None:
                record(lineage, ref, store, progress.manifests.get(ref))
            echo(f"[{time.monotonic() - started:6.1f}s] {ref.label:<12} ✓ {brief_stage(ref, progress, store.uri, gpus=bool(machine.devices))}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = time.monotonic() - started
    result.iterations = iteration_summaries(progress, limit=1000)
    result.skipped = skipped_summary(progress)
    result.report = write_report(store, run, inputs)
    echo(format_summary(result))
    return result


#: seconds between the lines that say a stage is still starting (loading its model, reading its input)
HEARTBEAT_SECONDS = 15.0


def _watcher(
    store: Store, ref: StageRef, shards: int, display: StageDisplay, say: Callable[[str], None] | None = None, every: float = 2.0
) -> Callable[[], None]:
    """What the runner calls while a stage runs: every `every` seconds, the stage's progress to
    `display` (a store that does not answer just shows nothing new); until the stage reports work
    done, a line every HEARTBEAT_SECONDS to `say` that it is still starting."""
    began = last = heard = time.monotonic()

    def tick() -> None:
        nonlocal last, heard
        now = time.monotonic()
        if ref.kind == "data" or now - last < every:
            return
        last = now
        with contextlib.suppress(StorageUnavailable):
            view = watch_view(store, ref, shards)
            display.update(view)
            if view is not None and view.done:
                return
            if say is not None and now - heard >= HEARTBEAT_SECONDS:
                heard = now
                what = "loading its model" if view is not None else "starting: loading its model and reading its input"
                say(f"{ref.label:<12} … {what} ({duration(now - began)})")

    return tick


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def format_summary(result: RunResult) -> str:
    lines = [f"\nrun finished in {result.seconds:.1f}s; results in {result.store}", "", *iteration_table(result.iterations)]
    if result.skipped:
        lines += ["", "skipped input records (onBadRecord: skip):", *(f"  {line}" for line in result.skipped)]
    if result.report:
        lines += ["", f"report: {result.report}"]
    return "\n".join(lines)
