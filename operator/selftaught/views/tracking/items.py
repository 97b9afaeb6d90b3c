"""What a run has to log, read from its store alone: one `Item` per thing a tracking server
records, named so the ledger can say which were logged. Each is whole from the moment the store
holds it (a stage's manifest never changes), so logging one again is never needed and logging it
late — after a server came back, or by `selftaught track` for a run made before tracking was
configured — gives what logging it on time would have given.

- `params`: the spec, flattened to dotted keys, with every default it resolved to;
- `stage.<label>`: a finished stage's figures, as metrics named `<stage>.<figure>` at the step of
  its iteration (keep rate, tokens, tokens/s, process and wall seconds, GPU-hours estimated before
  the run and measured, and every number its manifest's summary reports); an evaluation adds the
  accuracy overall (`accuracy`) and per section or subset (`accuracy.<section>`), and its
  `metrics.json` as an artifact;
- `report`: once the run is done, the HTML report and the final metrics (every iteration's row);
- `model`: once the run is done, the best judge's checkpoint for the model registry, with its
  benchmark scores as tags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from selftaught.api.spec import SelfTaughtRun
from selftaught.errors import InvalidInput
from selftaught.pipeline.planner import plan, stage_graph
from selftaught.pipeline.scan import Progress, iteration_summaries, scan
from selftaught.pipeline.served import ALL_ITERATIONS, choose
from selftaught.pipeline.table import StageRef
from selftaught.store import ObjectNotFound, Store
from selftaught.store.layout import REPORT, metrics_output
from selftaught.store.manifest import published_key, read_published
from selftaught.views.estimate import estimate, inputs_for, measure

#: the longest parameter value MLflow keeps (3.x: 6000 characters)
MAX_PARAM = 6000


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    step: int


@dataclass(frozen=True)
class Registration:
    """The best judge: its checkpoint's URI in the store, its iteration and scores."""

    source: str
    iteration: int
    tags: dict[str, str]


@dataclass
class Item:
    key: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    #: (store key, artifact path): objects of the store to upload
    artifacts: list[tuple[str, str]] = field(default_factory=list)
    #: (artifact path, content): small documents made here (the final metrics)
    documents: list[tuple[str, str]] = field(default_factory=list)
    model: Registration | None = None
    #: the run is done: the tracking run ends
    final: bool = False


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys to text values; lists as JSON, nothing for unset (None) fields."""
    if isinstance(tree, dict):
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if tree is None:
        return {}
    text = json.dumps(tree) if isinstance(tree, list) else str(tree)
    return {prefix: text[:MAX_PARAM]}


def parameters(run: SelfTaughtRun) -> dict[str, str]:
    """The spec with its resolved defaults (the run's store URI and name too)."""
    spec = run.spec.model_dump(mode="json", by_alias=True)
    return {"run.name": run.metadata.name, "run.namespace": run.metadata.namespace, **flatten(spec)}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def evaluation_metrics(store: Store, iteration: int) -> dict[str, Any]:
    """An evaluation's metrics.json ({} when it cannot be read: the stage's figures still log)."""
    try:
        found = json.loads(read_published(store, published_key(store, *metrics_output(iteration))))
    except (ObjectNotFound, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def sections(metrics: dict[str, Any]) -> dict[str, float]:
    """The benchmark's sections of an evaluation, or, for held-out pairs, its custom subsets."""
    found = metrics.get("sections") or (metrics.get("custom") or {}).get("subsets") or {}
    return {str(name): float(value) for name, value in found.items() if _number(value) is not None}


def stage_item(store: Store, ref: StageRef, progress: Progress, planned: dict[str, float], measured: dict[str, tuple[float, float]]) -> Item:
    manifest = progress.manifests[ref]
    step, name = ref.iteration, ref.name
    figures: dict[str, float] = {"seconds": manifest.seconds}
    tokens = _number(manifest.counts.get("tokens"))
    if tokens is not None:
        figures["tokens"] = tokens
        if manifest.seconds > 0:
            figures["tokensPerSecond"] = tokens / manifest.seconds
    if ref.label in planned:
        figures["gpuHoursEstimated"] = planned[ref.label]
    if ref.label in measured:
        figures["gpuHoursMeasured"], figures["wallSeconds"] = measured[ref.label]
    for key, value in manifest.summary.items():
        if (number := _number(value)) is not None:
            figures[key] = number
    item = Item(key=f"stage.{ref.label}", metrics=[Metric(f"{name}.{key}", value, step) for key, value in sorted(figures.items())])
    if name == "evaluate":
        overall = _number(manifest.summary.get("overall"))
        overall = overall if overall is not None else _number(manifest.summary.get("accuracy"))
        if overall is not None:
            item.metrics.append(Metric("accuracy", overall, step))
        for section, value in sorted(sections(evaluation_metrics(store, ref.iteration)).items()):
            item.metrics.append(Metric(f"accuracy.{section}", value, step))
        key = published_key(store, *metrics_output(ref.iteration))
        if store.exists(key):
            item.artifacts.append((key, f"evaluate/iter-{ref.iteration:03d}/metrics.json"))
    return item


def registration(run: SelfTaughtRun, progress: Progress) -> Registration | None:
    """The best trained judge (`pipeline/served.py`'s choice, as the server's), or None when no
    trained iteration was evaluated."""
    rows = iteration_summaries(progress, ALL_ITERATIONS)
    try:
        best = choose(rows, run.spec.models.seed)
    except InvalidInput:
        return None
    row = next(r for r in rows if r["iteration"] == best.iteration)
    tags = {"iteration": str(best.iteration), "benchmark": run.spec.evaluation_benchmark, "run": f"{run.metadata.namespace}/{run.metadata.name}"}
    tags.update({key: str(value) for key, value in row.items() if _number(value) is not None and key != "iteration"})
    seed = next((r for r in rows if r["iteration"] == 0), {})
    for key in ("overall", "accuracy"):
        if _number(seed.get(key)) is not None:
            tags[f"seed.{key}"] = str(seed[key])
    return Registration(source=best.model.source, iteration=best.iteration, tags=tags)


def run_items(store: Store, run: SelfTaughtRun) -> list[Item]:
    """Everything of the run that its store holds now, in the order a reader expects it."""
    progress = scan(store)
    measured_so_far = measure(progress.manifests)
    # estimated: what the estimate says from the spec and the inputs as counted, before any time is measured
    before = estimate(run.spec, inputs_for(run.spec, instructions=measured_so_far.instructions, evaluation_examples=measured_so_far.evaluation_examples))
    planned = {} if before.unknown else {row.label: row.gpu_hours for row in before.rows}
    after = estimate(run.spec, inputs_for(run.spec), measured_so_far)
    measured = {row.label: (row.gpu_hours, row.hours * 3600) for row in after.rows if row.measured}
    items = [Item(key="params", params=parameters(run))]
    order = [node.ref for node in stage_graph(run.spec)]  # as they ran
    finished = sorted(progress.manifests, key=lambda ref: order.index(ref) if ref in order else len(order))
    items += [stage_item(store, ref, progress, planned, measured) for ref in finished]
    if not plan(run.spec, progress.done).finished:
        return items
    if progress.report:  # written by the stage that finished the run (or later by `selftaught report`)
        rows = iteration_summaries(progress, ALL_ITERATIONS)
        document = json.dumps({"iterations": rows}, indent=2)
        items.append(Item(key="report", artifacts=[(REPORT, "report/index.html")], documents=[("metrics.json", document)], final=True))
    if (model := registration(run, progress)) is not None:
        items.append(Item(key="model", model=model))
    return items
