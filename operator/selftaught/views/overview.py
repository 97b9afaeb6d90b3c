"""A run's state as a person reads it, from its store alone (`selftaught status`): which stages are
done and what they reported, how far the running ones are and how long they have left, what
disrupted them and the work that cost, the iterations' numbers, the cost so far and to come, and
where the report is. The same view for a run started here, elsewhere, or on a cluster: everything
it shows is in the store."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from selftaught.api.load import parse_run
from selftaught.api.spec import SelfTaughtRun
from selftaught.errors import InvalidInput, InvalidSpec
from selftaught.pipeline.planner import plan, stage_graph
from selftaught.pipeline.reuse import reused_stages
from selftaught.pipeline.runstore import open_run_store
from selftaught.pipeline.scan import Progress, iteration_summaries, scan, stages_with_skips
from selftaught.pipeline.table import StageRef
from selftaught.store import ObjectNotFound, Store, open_store
from selftaught.store.disruptions import DisruptionRecord, causes_text, gpu_time, read_disruption, summary
from selftaught.store.layout import REPORT, RUN_SNAPSHOT
from selftaught.views.estimate import Inputs, estimate, measure, with_reuse
from selftaught.views.live import StageView, describe, duration, read_view
from selftaught.views.numbers import estimate as with_interval
from selftaught.views.numbers import summary_text
from selftaught.views.state import Phase, Runner, run_state, state_lines
from selftaught.views.tracking.ledger import describe as describe_tracking
from selftaught.views.tracking.ledger import failures as tracking_failures


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


def overview(
    store: Store, run: SelfTaughtRun, inputs: Inputs, now: float | None = None, runner: Runner | None = None, resume: str = "selftaught run RUN.yaml"
) -> str:
    """The run as `selftaught status` prints it; `runner` is who holds its lease (`local/`), and
    `resume` the command that starts it again."""
    now = time.time() if now is None else now
    progress = scan(store)
    step = plan(run.spec, progress.done)
    views = running_views(store, run, progress)
    disrupted = disruptions(store, progress)
    state = run_state(store, progress, step, runner)
    lines = [f"run {run.metadata.namespace}/{run.metadata.name}: {len(step.done)} of {step.total} stages done; store {store.uri}"]
    lines += [*state_lines(state, store, resume), ""]
    for ref in (node.ref for node in stage_graph(run.spec)):  # in the order they run
        if ref in progress.manifests and (reused := progress.manifests[ref].reused) is not None:
            lines.append(f"  ↺ {ref.label:<12} reused from {reused.get('from')} (the same stage key; not run here)")
        elif ref in progress.manifests:
            lines.append(f"  ✓ {ref.label:<12} {describe_stage(ref, progress)}")
        elif ref == state.failed and state.failure is not None:
            lines.append(f"  ✗ {ref.label:<12} failed, reason {state.failure.reason}")
        elif ref in views and state.phase in (Phase.STOPPED, Phase.FAILED):  # its numbers are where it stopped: no rate, no ETA
            where = describe(replace(views[ref], eta_seconds=None, tokens_per_second=None))
            lines.append(f"  ‖ {ref.label:<12} " + ("stopped before it reported progress" if where == "started" else f"stopped at {where}"))
        elif ref in views:
            lines.append(f"  … {ref.label:<12} {describe(views[ref], now)}")
        elif ref in step.ready:
            lines.append(f"  · {ref.label:<12} next")
        else:
            lines.append(f"  · {ref.label:<12} waiting")
        if disrupted.get(ref):
            lines.append(f"    {'':<12} {describe_disruptions(disrupted[ref])}")
    cost = with_reuse(estimate(run.spec, inputs, measure(progress.manifests)), reused_stages(progress.manifests))
    lines.append("")
    if cost.unknown:
        lines.append(f"cost: no estimate: {cost.unknown}")
    else:
        gpu = f"~{cost.gpu_hours:,.1f} GPU-hours ({cost.gpu}) in all, ~{cost.remaining_gpu_hours:,.1f} still to spend; " if cost.gpu_hours else ""
        lines.append(f"cost: {gpu}stage times added up ~{duration(cost.hours * 3600)}, ~{duration(cost.remaining_hours * 3600)} left ({cost.measured_stages} stages measured)")
        if cost.saved_gpu_hours or any(row.reused for row in cost.rows):
            lines.append(f"reuse: {', '.join(row.label for row in cost.rows if row.reused)} linked from earlier runs, ~{cost.saved_gpu_hours:,.1f} GPU-hours saved")
    if disrupted:
        lines.append("disruptions: " + summary([record for records in disrupted.values() for record in records]) + " (docs/spot.md)")
    rows = iteration_summaries(progress, limit=1000)
    if rows:
        lines += ["", *iteration_table(rows)]
    if store.exists(REPORT):
        lines += ["", f"report: {store.url(REPORT)}"]
    elif step.finished:
        lines += ["", "report: none yet (selftaught report makes it)"]
    lines += [f"tracking: {describe_tracking(failure)}" for failure in tracking_failures(store)]
    return "\n".join(lines)


def disruptions(store: Store, progress: Progress) -> dict[StageRef, list[DisruptionRecord]]:
    """Each stage's disruption records, oldest first (one small read each)."""
    found: dict[StageRef, list[DisruptionRecord]] = {}
    for ref, keys in progress.disruption_keys.items():
        records = [record for key in keys if (record := read_disruption(store, key)) is not None]
        if records:
            found[ref] = sorted(records, key=lambda record: record.at)
    return found


def describe_disruptions(records: list[DisruptionRecord]) -> str:
    """`disrupted 2x (1 NodeLost, 1 Eviction): 40 samples and 16 GPU-seconds redone`."""
    units = {record.unit for record in records}
    amounts = [record.redone for record in records]
    redone = f"{sum(amounts):,.0f} {units.pop()} and " if len(units) == 1 and None not in units and None not in amounts else ""  # type: ignore[arg-type]
    return f"disrupted {len(records)}x ({causes_text(records)}): {redone}{gpu_time(sum(record.gpu_seconds for record in records))} redone"


def skipped_summary(progress: Progress, reasons: int = 3) -> list[str]:
    """One line per finished stage that skipped input records: how many, the first `reasons`
    reasons its manifest keeps, and where the manifest is (for `selftaught run`'s summary)."""
    lines = []
    for ref, count in stages_with_skips(progress):
        manifest = progress.manifests[ref]
        first = "; ".join(manifest.skipped[:reasons])
        more = f" (the first {len(manifest.skipped)} in {ref.manifest_key})" if len(manifest.skipped) > reasons else ""
        lines.append(f"{ref.label}: {count} record{'' if count == 1 else 's'} skipped" + (f": {first}" if first else "") + more)
    return lines


def describe_stage(ref: StageRef, progress: Progress) -> str:
    """A finished stage in one line: its summary and seconds."""
    manifest = progress.manifests[ref]
    return f"{summary_text(manifest.summary)} ({manifest.seconds:.1f}s)"


#: what a `✓` line of `selftaught run` leaves to `selftaught status`, the report and the manifest:
#: each order's accuracy, the judge's fixed-N comparison, the trainer's checkpointing numbers
_LEFT_OUT = ("orderA", "orderB", "bothOrders", "fixedNTokensPerKept", "contaminationExamples", "skipped")
#: and, when the line is still too long, these first (a method's own numbers come last and stay)
_FIRST_TO_GO = ("voteTokens", "voteTokensSaved", "voteSamplesPerExample", "tokensPerKept", "keepRate", "examples")


def brief_stage(ref: StageRef, progress: Progress, store_uri: str, *, gpus: bool, width: int = 90, indent: int = 25) -> str:
    """A finished stage in a line of at most `width` characters, for the `✓` lines of `selftaught
    run` and `status --watch`: its summary less what status and the report keep, a rate per GPU
    only where there are GPUs, and its seconds (numbers that still do not fit go, the least
    telling first, then from the end, said with `…`); a checkpoint on a second line, indented by
    `indent`, relative to the run's store."""
    manifest = progress.manifests[ref]
    summary: dict[str, Any] = {}
    rate = checkpoint = ""
    for key, value in manifest.summary.items():
        if key in _LEFT_OUT or (key.startswith(("checkpoint", "resumed")) and key != "checkpoint"):
            continue
        if key in ("truncated", "tooLong", "unparsed") and not value:
            continue
        if key.endswith("PerGpu"):
            rate = f", {value:,.0f} tok/s/GPU" if gpus and isinstance(value, int | float) else ""
        elif key == "checkpoint" and isinstance(value, str):
            checkpoint = "\n" + " " * indent + "→ " + value.removeprefix(store_uri.rstrip("/") + "/")
        else:
            summary[key] = value
    ending = f"{rate} ({manifest.seconds:.1f}s)"

    def parts(shown: dict[str, Any]) -> list[str]:
        return [
            text for key, value in shown.items()
            if not key.endswith("Interval") and (text := summary_text({key: value, **{k: v for k, v in shown.items() if k == f"{key}Interval"}}))
        ]  # fmt: skip

    for key in _FIRST_TO_GO:
        if len(", ".join(parts(summary))) + len(ending) <= width:
            break
        summary.pop(key, None)
    shown = parts(summary)

    def line(kept: int) -> str:
        return ", ".join(shown[:kept] + (["…"] if kept < len(shown) else []))

    kept = len(shown)
    while kept > 0 and len(line(kept)) + len(ending) > width:  # the last parts go first, whole
        kept -= 1
    return (line(kept) + ending).lstrip(", ") + checkpoint


def iteration_table(rows: list[dict[str, Any]]) -> list[str]:
    """The per-iteration table `selftaught run` and `selftaught status` print."""
    grpo = any(row.get("reward") is not None for row in rows)  # a GRPO run: its train stages' reward, no judge stage
    votes = any(row.get("voteSamplesPerExample") is not None for row in rows)  # majority votes: what stopping early saved
    judged = f"{'reward':>6}  {'train-acc':>9}" if grpo else f"{'tried':>6}  {'kept':>6}  {'keep%':>6}"
    vote_header = f"  {'maj-vote':>8}  {'samples':>7}  {'tok saved':>9}" if votes else ""
    lines = [f"{'iter':>4}  {judged}  {'accuracy [95% CI]':>17}  {'n':>5}  {'overall [95% CI]':>17}  {'pos-cons':>8}{vote_header}  checkpoint"]
    for row in rows:
        keep = row.get("keepRate")
        if grpo:
            judged = f"{_fmt(row.get('reward'), 6, '.3f')}  {_fmt(row.get('trainAccuracy'), 9, '.3f')}"
        else:
            judged = f"{_fmt(row.get('tried'))}  {_fmt(row.get('kept'))}  {'' if keep is None else f'{100 * keep:5.1f}%':>6}"
        vote = (
            f"  {_fmt(row.get('majorityVote'), 8, '.2f')}  {_fmt(row.get('voteSamplesPerExample'), 7, '.1f')}  {_fmt(row.get('voteTokensSaved'), 9, ',')}"
            if votes
            else ""
        )
        lines.append(
            f"{row['iteration']:>4}  {judged}  {with_interval(row.get('accuracy'), row.get('accuracyInterval')):>17}  {_fmt(row.get('evaluationExamples'), 5)}  "
            f"{with_interval(row.get('overall'), row.get('overallInterval')):>17}  {_fmt(row.get('positionConsistent'), 8, '.2f')}{vote}  {row.get('checkpoint') or ''}"
        )
    return lines


def _fmt(value: Any, width: int = 6, spec: str = "") -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def overview_document(store: Store, run: SelfTaughtRun, inputs: Inputs, runner: Runner | None = None) -> dict[str, Any]:
    """What `overview` says, as data (`selftaught status -o json|yaml`), its keys in camelCase as
    the CRD's status spells them."""
    progress = scan(store)
    step = plan(run.spec, progress.done)
    views = running_views(store, run, progress)
    state = run_state(store, progress, step, runner)
    stages = []
    for ref in (node.ref for node in stage_graph(run.spec)):
        entry: dict[str, Any] = {"stage": ref.label}
        if ref in progress.manifests:
            manifest = progress.manifests[ref]
            entry.update(state="Succeeded", seconds=round(manifest.seconds, 1), summary=manifest.summary)
        elif ref == state.failed:
            entry["state"] = "Failed"
        elif ref in views:
            view = views[ref]
            entry.update(state="Running" if state.phase in (Phase.RUNNING, Phase.UNKNOWN) else "Stopped", progress={
                "percent": view.percent, "done": view.done, "total": view.total, "unit": view.unit, "shards": view.shards,
                "shardsDone": view.shards_done, "tokensPerSecond": view.tokens_per_second, "etaSeconds": view.eta_seconds,
            })  # fmt: skip
        else:
            entry["state"] = "Ready" if ref in step.ready else "Waiting"
        stages.append(entry)
    cost = estimate(run.spec, inputs, measure(progress.manifests))
    failure = state.failure
    return {
        "name": run.metadata.name,
        "namespace": run.metadata.namespace,
        "store": store.uri,
        "phase": str(state.phase),
        "stagesDone": len(step.done),
        "stagesTotal": step.total,
        "runner": None if runner is None else {"running": runner.alive, "message": runner.text},
        "failure": None if failure is None else {
            "stage": failure.stage, "reason": failure.reason, "message": failure.message, "permanent": failure.permanent,
            "at": failure.at, "log": store.url(failure.log) if failure.log else None,
        },  # fmt: skip
        "stages": stages,
        "iterations": iteration_summaries(progress, limit=1000),
        "estimate": {"unknown": cost.unknown}
        if cost.unknown
        else {
            "gpu": cost.gpu, "gpuHours": round(cost.gpu_hours, 3), "remainingGpuHours": round(cost.remaining_gpu_hours, 3),
            "hours": round(cost.hours, 4), "remainingHours": round(cost.remaining_hours, 4), "measuredStages": cost.measured_stages,
        },  # fmt: skip
        "report": store.url(REPORT) if store.exists(REPORT) else None,
        "tracking": [describe_tracking(failure) for failure in tracking_failures(store)] or None,  # as status.tracking
    }
