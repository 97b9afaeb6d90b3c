"""A run's results out of its store (`selftaught get`): the judge's checkpoint, the evaluations'
metrics, the report and the stage logs, from a local folder or S3 alike.

Every output of a stage lies under the attempt that won (`<stage>/attempt-<id>/`, named by the
stage's `_manifest.json`), so what is copied is resolved through the manifest, never guessed. It
lands in the store's own layout without the attempt level, under the run's name:

```
DIR/<name>/iter-002/checkpoint/             get checkpoint (the best evaluated iteration, or --iteration N)
DIR/<name>/iter-001/metrics.json            get metrics (every evaluated iteration, or --iteration N|best)
DIR/<name>/report/index.html                get report
DIR/<name>/iter-001/judge/logs/local-….log  get logs (the logs the local runner kept, per process)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from selftaught.api.spec import SelfTaughtRun
from selftaught.errors import InvalidInput
from selftaught.pipeline.planner import stage_graph
from selftaught.pipeline.scan import Progress, iteration_summaries, scan
from selftaught.pipeline.served import ALL_ITERATIONS, choose
from selftaught.pipeline.table import StageRef
from selftaught.store import Store
from selftaught.store.layout import REPORT, checkpoint_output, metrics_output
from selftaught.store.manifest import published_key

KINDS = ("checkpoint", "metrics", "report", "logs")


@dataclass(frozen=True)
class Copy:
    """One object of the store to copy, and where below DIR/<name>/ it goes."""

    key: str
    to: str


@dataclass(frozen=True)
class Selection:
    """What `get` copies: the objects, the folders or files it names to the user, and a sentence."""

    copies: list[Copy]
    shown: list[str]
    said: str


def best_or(iteration: str | None, progress: Progress, run: SelfTaughtRun, *, default_best: bool) -> list[int] | None:
    """The iterations `--iteration` names: a number, `best` (the best evaluated trained iteration,
    as `selftaught serve` chooses), or with none given the best (checkpoint) or every one (None)."""
    if iteration is None and not default_best:
        return None
    if iteration is None or iteration == "best":
        return [choose(iteration_summaries(progress, limit=ALL_ITERATIONS), run.spec.models.seed).iteration]
    try:
        number = int(iteration)
    except ValueError:
        raise InvalidInput(f"--iteration {iteration!r}: give an iteration number or best") from None
    if not 0 <= number <= run.spec.iterations:
        raise InvalidInput(f"--iteration {number}: run {run.metadata.name} has iterations 0 to {run.spec.iterations}")
    return [number]


def _published(store: Store, progress: Progress, ref: StageRef, output: tuple[str, str]) -> str:
    if ref not in progress.manifests:
        raise InvalidInput(f"{store.url(ref.prefix)}: {ref.label} has not finished, so it has no {output[1]} yet")
    return published_key(store, *output)


def select(store: Store, run: SelfTaughtRun, kind: str, iteration: str | None = None, stage: str | None = None) -> Selection:
    """What `selftaught get KIND` copies of the run in `store` (pure but for reading the store)."""
    progress = scan(store)
    if kind == "checkpoint":
        [number] = best_or(iteration, progress, run, default_best=True) or [0]
        if number == 0:
            raise InvalidInput(f"iteration 0 is the seed, {run.spec.models.seed.source}: it is not in the run's store")
        folder = _published(store, progress, StageRef("train", number), checkpoint_output(number))
        target = f"iter-{number:03d}/checkpoint"
        copies = [Copy(key, f"{target}/{key.removeprefix(folder + '/')}") for key in store.list(folder + "/")]
        return Selection(copies, [target], f"the checkpoint of iteration {number} ({store.url(folder)})")
    if kind == "metrics":
        numbers = best_or(iteration, progress, run, default_best=False)
        evaluated = sorted(ref.iteration for ref in progress.manifests if ref.name == "evaluate")
        numbers = evaluated if numbers is None else numbers
        if not numbers:
            raise InvalidInput(f"{store.url()}: no evaluation has finished yet, so there are no metrics")
        keys = [(number, _published(store, progress, StageRef("evaluate", number), metrics_output(number))) for number in numbers]
        copies = [Copy(key, f"iter-{number:03d}/metrics.json") for number, key in keys]
        return Selection(copies, [copy.to for copy in copies], f"the metrics of iteration{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}")
    if kind == "report":
        if not progress.report:
            raise InvalidInput(f"{store.url(REPORT)}: no report yet (`selftaught report` renders it once a stage has finished)")
        return Selection([Copy(REPORT, REPORT)], [REPORT], "the run's report")
    if kind == "logs":
        numbers = best_or(iteration, progress, run, default_best=False) if iteration is not None else None
        refs = [node.ref for node in stage_graph(run.spec)]
        if stage is not None:
            refs = [ref for ref in refs if ref.label == stage]
            if not refs:
                raise InvalidInput(f"--stage {stage}: run {run.metadata.name} has stages {', '.join(node.ref.label for node in stage_graph(run.spec))}")
        if numbers is not None:
            refs = [ref for ref in refs if ref.iteration in numbers]
        copies = [
            Copy(key, f"{ref.prefix}/logs/{PurePosixPath(key).name}") for ref in refs for key in sorted(progress.log_keys.get(ref, []))
        ]
        if not copies:
            raise InvalidInput(
                f"{store.url()}: no stage logs kept here (the local runner keeps each process's log; on a cluster: "
                f"kubectl logs -n {run.metadata.namespace} -l selftaught.dev/run={run.metadata.name} --prefix)"
            )
        return Selection(copies, sorted({str(PurePosixPath(copy.to).parent) for copy in copies}), f"{len(copies)} stage log{'s' if len(copies) > 1 else ''}")
    raise InvalidInput(f"get {kind!r}: choose one of {', '.join(KINDS)}")


def fetch(store: Store, selection: Selection, folder: Path) -> list[Path]:
    """Copy the selection into `folder` (each object atomically); the paths it names, written."""
    for copy in selection.copies:
        store.download_file(copy.key, folder / copy.to)
    return [folder / shown for shown in selection.shown]
