"""Where a run stands, in one word and a sentence, from its store and from who holds its lease:
succeeded, failed (a stage's reason, message and log), running, or stopped with nobody running it.

A local run has no status object: the local runner leaves a failed attempt's record in the store
(`store/failures.py`) and holds the run's lease while it runs (`local/lease.py`). A run on a
cluster has neither; its state is the operator's, in `kubectl get selftaughtrun`, so from the
store alone it is only known to be finished or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from selftaught.pipeline.planner import Plan
from selftaught.pipeline.scan import Progress
from selftaught.pipeline.table import StageRef
from selftaught.store import Store
from selftaught.store.disruptions import read_disruption
from selftaught.store.failures import FailureRecord, read_failure


class Phase(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    RUNNING = "Running"
    STOPPED = "Stopped"  #: not finished, not failed, and nobody runs it (stopped, killed, or never started)
    UNKNOWN = "Unknown"  #: not finished; whoever runs it (an operator) does not say so in the store


@dataclass(frozen=True)
class Runner:
    """Who runs the run now, as its lease says: `alive` True (a live `selftaught run`), False
    (nobody: the lease is free, expired or its process gone) or None (no way to tell: a store an
    operator may be running); `text` says who, or who was."""

    alive: bool | None
    text: str = ""


@dataclass(frozen=True)
class RunState:
    phase: Phase
    failure: FailureRecord | None = None
    failed: StageRef | None = None
    runner: Runner | None = None

    @property
    def over(self) -> bool:
        """Nothing will change unless someone acts: what `status --watch` waits for."""
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.STOPPED)

    @property
    def exit_code(self) -> int:
        """`selftaught status`: 1 for a failed run, else 0."""
        return 1 if self.phase == Phase.FAILED else 0


def last_failure(store: Store, progress: Progress, step: Plan) -> tuple[StageRef, FailureRecord] | None:
    """The newest failed attempt of a stage that is not done, unless the run was stopped (a local
    disruption) after it: a later start that was interrupted is the newer news."""
    found = None
    for ref, keys in progress.failure_keys.items():
        if ref in progress.manifests:
            continue
        for key in keys:
            record = read_failure(store, key)
            if record is not None and (found is None or record.at > found[1].at):
                found = (ref, record)
    if found is None:
        return None
    stopped = [record.at for keys in progress.disruption_keys.values() for key in keys if (record := read_disruption(store, key)) and record.executor == "local"]
    return None if stopped and max(stopped) > found[1].at else found


def run_state(store: Store, progress: Progress, step: Plan, runner: Runner | None) -> RunState:
    if step.finished:
        return RunState(Phase.SUCCEEDED, runner=runner)
    if runner is not None and runner.alive:
        return RunState(Phase.RUNNING, runner=runner)
    failed = last_failure(store, progress, step)
    if failed is not None:
        return RunState(Phase.FAILED, failed[1], failed[0], runner)
    if runner is not None and runner.alive is False:
        return RunState(Phase.STOPPED, runner=runner)
    return RunState(Phase.UNKNOWN, runner=runner)


def state_lines(state: RunState, store: Store, resume: str) -> list[str]:
    """The sentence under the run's first line: what happened and what to do. `resume` is the
    command that starts the run again (`selftaught run FILE`)."""
    if state.phase == Phase.FAILED and state.failure is not None:
        failure = state.failure
        shard = f" (shard {failure.shard})" if failure.shard is not None else ""
        lines = [f"failed: {state.failed.label if state.failed else failure.stage}{shard}, reason {failure.reason}: {failure.message}"]
        if failure.log:
            lines.append(f"  log: {store.url(failure.log)}")
        fix = "fix what it says, then " if failure.permanent else ""
        lines.append(f"  not running; {fix}{resume} to resume")
        return lines
    if state.phase == Phase.RUNNING and state.runner is not None:
        return [f"running: {state.runner.text}"]
    if state.phase == Phase.STOPPED:
        said = f" ({state.runner.text})" if state.runner is not None and state.runner.text else ""
        return [f"not running: no selftaught run holds its lease{said}; {resume} to start or resume it"]
    return []
