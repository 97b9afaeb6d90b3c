"""The stage process, the executor of one stage: what `selftaught stage <name>` does in a pod or
under the local runner (or torchrun). It is the one executor that loads `stages/` and the engines.

It runs what is left of one stage (or one shard of it) and, whatever goes wrong, leaves the user
one reason and message: in the termination message the operator reads (Kubernetes caps it at
4 KiB), in the log, and in the exit code the Job's podFailurePolicy reads. Being asked to stop
(SIGTERM) is one of those: `Disrupted` (`StopSignal`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from selftaught.api.load import load_run
from selftaught.api.spec import SelfTaughtRun
from selftaught.engines.devices import check_cuda, requested_gpus
from selftaught.errors import (
    EXIT_PERMANENT,
    EXIT_RETRYABLE,
    TERMINATION_MESSAGE_PATH,
    TERMINATION_MESSAGE_VARIABLE,
    Disrupted,
    Failure,
    InvalidInput,
    Reason,
    encode,
    failure_of,
)
from selftaught.pipeline.launch import die_with_parent, read_stage_document
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import Manifest

log = logging.getLogger("selftaught.stage")


class StopSignal:
    """SIGTERM (or SIGINT) to a stage process: a pod deleted or evicted, a node drained or its
    spot instance reclaimed, Ctrl-C through the local runner. The stage ends as `Disrupted`
    (transient: the next attempt continues from what the store holds). At once, by default: the
    handler raises it in the main thread, whatever the stage was doing (what a generation stage
    finished is in the store already). Within `deferred()` (a trainer's loop) it only notes the
    request: the trainer saves a checkpoint at its next step end, then raises `Disrupted` itself,
    saying what it saved (`engines/checkpointing.py`). Only the first signal counts: torchrun
    forwards the SIGTERM its worker got from the runner as well."""

    def __init__(self) -> None:
        self.signal_name = ""
        self.stage = "the stage"
        self._asked = threading.Event()
        self._deferred = 0

    def requested(self) -> bool:
        return self._asked.is_set()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1

    def __call__(self, signum: int, frame: object) -> None:
        if self._asked.is_set():
            return
        self.signal_name = signal.Signals(signum).name
        self._asked.set()
        if not self._deferred:
            raise Disrupted(f"stopped by {self.signal_name}: {self.stage} ends here; the next attempt continues from what the store holds")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """This handler for SIGTERM and SIGINT within the block; outside the main thread (a test's
        worker) Python allows none, and signals are left alone."""
        previous = {}
        with contextlib.suppress(ValueError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_stage(run: SelfTaughtRun, ref: StageRef, shards: list[int] | None = None, stop: StopSignal | None = None) -> Manifest | None:
    """Run what is left of `ref` (every unfinished shard, or only `shards`); the stage manifest
    once the whole stage is done, else None. `stop`: the stage process's SIGTERM handler."""
    num_shards = run.spec.generation.shards if ref.sharded else 1
    if not ref.sharded:
        shards = None  # e.g. a training pod's completion index is its node rank, not a shard
    for shard in shards or []:
        if not 0 <= shard < num_shards:
            raise InvalidInput(f"shard {shard} out of range: {ref.label} has shards 0 to {num_shards - 1} (spec.generation.shards)")
    from selftaught import stages  # the ML side: only stage processes load it

    ctx = stages.StageContext(run=run, stage=ref, store=open_run_store(run), num_shards=num_shards)
    if stop is not None:
        ctx.stop = stop
    return stages.execute(stages.IMPLEMENTATIONS[ref.name], ctx, shards)


def stage_of(run: SelfTaughtRun, name: str, iteration: int) -> StageRef:
    """The stage asked for, if the run has it: `judge --iteration=9` of a 5-iteration run is
    refused here, not started on inputs that will never exist."""
    try:
        ref = StageRef(name, iteration)  # type: ignore[arg-type]
    except ValueError as error:
        raise InvalidInput(str(error)) from None
    if ref.iteration > run.spec.iterations:
        raise InvalidInput(f"{ref.label}: no such iteration, spec.iterations is {run.spec.iterations}")
    if ref.name == "judge" and not run.spec.judge_stage:
        raise InvalidInput(f"{ref.label}: a train.method {run.spec.train.method} run has no judge stage (its train stage samples its own judgments)")
    return ref


def completion_index(value: str) -> int:
    """`JOB_COMPLETION_INDEX` as a shard number (Kubernetes sets it; a person may too)."""
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"JOB_COMPLETION_INDEX={value!r} is not a shard number") from None


def write_termination_message(failure: Failure) -> None:
    path = os.environ.get(TERMINATION_MESSAGE_VARIABLE, TERMINATION_MESSAGE_PATH)
    with contextlib.suppress(OSError):  # outside a pod there may be nowhere to write it: the log has it
        Path(path).write_text(encode(failure))


def main(name: str, iteration: int, shard: int | None, run_file: str | None) -> int:
    """The exit code of `selftaught stage`: 0, EXIT_RETRYABLE or EXIT_PERMANENT."""
    die_with_parent()  # under the local runner or torchrun: never outlive it (a parent's death is a SIGTERM)
    stop = StopSignal()
    with stop.installed():
        return _main(name, iteration, shard, run_file, stop)


def _main(name: str, iteration: int, shard: int | None, run_file: str | None, stop: StopSignal) -> int:
    try:
        run = load_run(run_file) if run_file else read_stage_document()
        ref = stage_of(run, name, iteration)
        stop.stage = ref.label
        if shard is None and os.environ.get("JOB_COMPLETION_INDEX"):
            shard = completion_index(os.environ["JOB_COMPLETION_INDEX"])
        check_cuda(requested_gpus())  # GPUs given but unusable: say so now, not after days on CPU
        if ref.kind == "training":
            point_trainer_at_tracking(run, ref)
        manifest = run_stage(run, ref, None if shard is None else [shard], stop)
    except Exception as error:  # the one place any failure becomes what the user is told
        failure = failure_of(error)
        write_termination_message(failure)
        if failure.reason == Reason.STAGE_FAILED:
            log.exception("stage failed")  # a bug or an engine crash: the traceback helps
        else:
            log.error("%s: %s", failure.reason, failure.message)
        return EXIT_PERMANENT if failure.permanent else EXIT_RETRYABLE
    if manifest is not None:
        log.info("%s done: %s", ref.label, json.dumps(manifest.summary)[:2000])
        report_if_finished(run)
        track(run)
    return 0


def report_if_finished(run: SelfTaughtRun) -> str | None:
    """The run's HTML report, written by the stage process that finishes the run's last stage (in a
    pod: the generation or training image, which have matplotlib; the operator loads none of it).
    A report that cannot be written is logged, never a failed stage: its outputs are published."""
    from selftaught.pipeline.planner import plan
    from selftaught.pipeline.scan import scan
    from selftaught.views.html_report import write_report

    try:
        store = open_run_store(run)
        if not plan(run.spec, scan(store).done).finished:
            return None
        url = write_report(store, run)
    except Exception:  # matplotlib missing, the store gone for a moment: the run succeeded all the same
        log.warning("the run's report was not written", exc_info=True)
        return None
    log.info("the run's report: %s", url)
    return url


def track(run: SelfTaughtRun) -> None:
    """Log to the run's tracking servers whatever of it they have not got yet (this stage, and
    whatever an earlier stage could not log): after the stage is published, so a server that is
    down costs the run nothing but one bounded try (`views/tracking`), recorded for the status."""
    if run.spec.tracking.mlflow is None and run.spec.tracking.wandb is None:
        return
    from selftaught.views.tracking import sync

    try:
        outcome = sync(open_run_store(run), run)
    except Exception:  # the store gone for a moment: the stage is published all the same
        log.warning("the run was not logged to its tracking servers", exc_info=True)
        return
    for backend, items in outcome.logged.items():
        if items:
            log.info("%s: logged %s", backend, ", ".join(items))


def point_trainer_at_tracking(run: SelfTaughtRun, ref: StageRef) -> None:
    """A train stage's rank 0 sends its Trainer's curves to the run's tracking servers: a run nested
    in the run's MLflow run, the run's W&B run (`engines/training.py` reads SELFTAUGHT_REPORT_TO)."""
    if (run.spec.tracking.mlflow is None and run.spec.tracking.wandb is None) or os.environ.get("RANK", "0") != "0":
        return
    from selftaught.views.tracking import training_environment

    try:
        os.environ.update(training_environment(open_run_store(run), run, ref.label))
    except Exception:
        log.warning("the training curves will not be logged", exc_info=True)
