"""Runs side by side (`selftaught compare RUN...`): the recipe knobs that differ, the headline
accuracy per iteration with its 95 % interval, and the GPU-hours each run cost (and saved by
reuse); one self-contained HTML page with every run's accuracy on common axes.

Everything is read from the runs' stores, through the report's own collection
(`views/html_report.collect`), so the numbers are the ones each run's report shows.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Any

from selftaught.api.changes import depends_on, flat_spec
from selftaught.api.spec import SelfTaughtRun
from selftaught.pipeline.reuse import reused_stages
from selftaught.pipeline.scan import scan
from selftaught.store import Store
from selftaught.views import plots
from selftaught.views.estimate import Estimate, estimate, inputs_for, measure, with_reuse
from selftaught.views.html_report import ReportData, collect
from selftaught.views.numbers import estimate as with_interval

#: spec sections that say where a run is or how it is run, never what it learns: not recipe knobs
NOT_KNOBS = ("storage", "scheduling", "retries", "estimate", "serve", "reuse", "suspend")


@dataclass
class Compared:
    name: str
    store: str
    knobs: dict[str, Any]
    data: ReportData
    cost: Estimate

    @property
    def headline(self) -> str:
        """`overall` where the evaluations have a benchmark's overall score, else `accuracy`."""
        return "overall" if any(row.get("overall") is not None for row in self.data.iterations) else "accuracy"

    def score(self, iteration: int) -> tuple[float | None, Any, int | None]:
        row = next((r for r in self.data.iterations if r["iteration"] == iteration), {})
        return row.get(self.headline), row.get(f"{self.headline}Interval"), row.get("evaluationExamples")


def knobs_of(run: SelfTaughtRun) -> dict[str, Any]:
    """The run's recipe: every spec field that changes what a stage produces, defaults resolved,
    and `iterations`."""
    flat = flat_spec(run.spec)
    return {
        path: value
        for path, value in flat.items()
        if path == "iterations" or (not path.startswith(NOT_KNOBS) and depends_on(path).stage is not None)
    }


def compared(store: Store, run: SelfTaughtRun) -> Compared:
    progress = scan(store)
    cost = with_reuse(estimate(run.spec, inputs_for(run.spec), measure(progress.manifests)), reused_stages(progress.manifests))
    return Compared(f"{run.metadata.namespace}/{run.metadata.name}", store.uri, knobs_of(run), collect(store, run, progress, cost), cost)


def differing(runs: list[Compared]) -> list[tuple[str, list[Any]]]:
    """(path, value per run) of the knobs whose values are not the same in every run."""
    paths = sorted({path for run in runs for path in run.knobs})
    rows = [(path, [run.knobs.get(path) for run in runs]) for path in paths]
    return [(path, values) for path, values in rows if len({repr(v) for v in values}) > 1]


def _iterations(runs: list[Compared]) -> list[int]:
    return sorted({row["iteration"] for run in runs for row in run.data.iterations if row.get(run.headline) is not None})


def _gpu_hours(run: Compared) -> str:
    text = f"{run.cost.gpu_hours:,.2f}"
    return text + (f" (+{run.cost.saved_gpu_hours:,.2f} reused)" if run.cost.saved_gpu_hours else "")


def table_rows(runs: list[Compared]) -> list[list[str]]:
    """The table as rows of cells: a header, the knobs that differ, a score per iteration, GPU-hours."""
    rows = [["", *[run.name for run in runs]]]
    rows += [[path, *[_cell(v) for v in values]] for path, values in differing(runs)]
    for iteration in _iterations(runs):
        label = "seed (iteration 0)" if iteration == 0 else f"iteration {iteration}"
        rows.append([f"{label} {runs[0].headline}", *[with_interval(*run.score(iteration)) for run in runs]])
    rows.append([f"GPU-hours ({runs[0].cost.gpu})", *[_gpu_hours(run) for run in runs]])
    return rows


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def format_table(runs: list[Compared]) -> str:
    rows = table_rows(runs)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not differing(runs):
        lines.insert(1, "(the runs' recipes are the same)")
    return "\n".join(lines)


def render(runs: list[Compared]) -> str:
    """One self-contained page: the table, and every run's accuracy per iteration on common axes."""
    iterations = _iterations(runs)
    series = {run.name: [run.score(i)[0] for i in iterations] for run in runs}
    intervals = {run.name: [_ends(run.score(i)[1]) for i in iterations] for run in runs}
    chart = plots.accuracy(iterations, series, {}, intervals)
    rows = table_rows(runs)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows[1:])
    image = f'<img alt="accuracy per iteration" src="data:image/png;base64,{base64.b64encode(chart).decode()}">' if chart else "<p>No evaluation yet.</p>"
    stores = "".join(f"<li>{html.escape(run.name)}: {html.escape(run.store)}</li>" for run in runs)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>selftaught compare</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style>"
        f"</head><body><h1>{len(runs)} runs compared</h1><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>{html.escape(runs[0].headline)} per iteration (95% intervals)</h2>{image}<h2>Stores</h2><ul>{stores}</ul></body></html>"
    )


def _ends(interval: Any) -> list[float] | None:
    if not interval:
        return None
    if isinstance(interval, dict):
        return [float(interval["low"]), float(interval["high"])]
    return [float(interval[0]), float(interval[1])]
