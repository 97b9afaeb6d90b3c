"""A run's state as a person reads it, from its store alone (`selftaught status`): which stages are
done and what they reported, how far the running ones are and how long they have left, the
iterations' numbers, the cost so far and to come, and where the report is. The same view for a run
started here, elsewhere, or on a cluster: everything it shows is in the store."""

from __future__ import annotations

import json
import time

from selftaught.api.load import parse_run
from selftaught.api.spec import SelfTaughtRun
from selftaught.errors import InvalidInput, InvalidSpec
from selftaught.pipeline.estimate import Inputs, estimate, measure
from selftaught.pipeline.live import StageView, describe, duration, read_view
from selftaught.pipeline.planner import plan, stage_graph
from selftaught.pipeline.progress import Progress, iteration_summaries, iteration_table, scan
from selftaught.pipeline.progress import describe as describe_stage
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.table import StageRef
from selftaught.store import ObjectNotFound, Store, open_store
from selftaught.store.layout import REPORT, RUN_SNAPSHOT


def open_run(run: SelfTaughtRun | None, uri: str | None = None, endpoint: str | None = None) -> tuple[SelfTaughtRun, Store]:
    """The run and its store: from a run file (`run`; the spec it started with, if it has) or from
    the URI of a run's folder in a store (the spec recorded there)."""
    store = open_run_store(run) if run is not None else open_store(uri or "", endpoint=endpoint)
    try:
        snapshot = json.loads(store.read_bytes(RUN_SNAPSHOT))
    except ObjectNotFound:
        if run is None:
            raise InvalidInput(f"{store.url()}: no run here (no {RUN_SNAPSHOT}); give the run's folder, <storage.uri>/<namespace>/<name>") from None
        return run, store  # not started yet
    except ValueError as error:
        raise InvalidInput(f"{store.url(RUN_SNAPSHOT)} is not JSON: {error}") from None
    try:
        recorded = parse_run(snapshot, source=store.url(RUN_SNAPSHOT))
    except InvalidSpec as error:
        raise InvalidInput(str(error)) from None
    return recorded, store


def running_views(store: Store, run: SelfTaughtRun, progress: Progress) -> dict[StageRef, StageView]:
    """The stages that are not done but have written progress, and how far they are."""
    views = {}
    for ref in progress.progress_keys:
        if ref not in progress.manifests and (view := read_view(store, ref, progress, run.spec.generation.shards)) is not None:
            views[ref] = view
    return views


def overview(store: Store, run: SelfTaughtRun, inputs: Inputs, now: float | None = None) -> str:
    now = time.time() if now is None else now
    progress = scan(store)
    step = plan(run.spec, progress.done)
    views = running_views(store, run, progress)
    lines = [f"run {run.metadata.namespace}/{run.metadata.name}: {len(step.done)} of {step.total} stages done; store {store.uri}", ""]
    for ref in (node.ref for node in stage_graph(run.spec)):  # in the order they run
        if ref in progress.manifests:
            lines.append(f"  ✓ {ref.label:<12} {describe_stage(ref, progress)}")
        elif ref in views:
            lines.append(f"  … {ref.label:<12} {describe(views[ref], now)}")
        elif ref in step.ready:
            lines.append(f"  · {ref.label:<12} next")
        else:
            lines.append(f"  · {ref.label:<12} waiting")
    cost = estimate(run.spec, inputs, measure(progress.manifests))
    lines.append("")
    if cost.unknown:
        lines.append(f"cost: no estimate: {cost.unknown}")
    else:
        gpu = f"~{cost.gpu_hours:,.1f} GPU-hours ({cost.gpu}) in all, ~{cost.remaining_gpu_hours:,.1f} still to spend; " if cost.gpu_hours else ""
        lines.append(f"cost: {gpu}stage times added up ~{duration(cost.hours * 3600)}, ~{duration(cost.remaining_hours * 3600)} left ({cost.measured_stages} stages measured)")
    rows = iteration_summaries(progress, limit=1000)
    if rows:
        lines += ["", *iteration_table(rows)]
    if store.exists(REPORT):
        lines += ["", f"report: {store.url(REPORT)}"]
    elif step.finished:
        lines += ["", "report: none yet (selftaught report makes it)"]
    return "\n".join(lines)
