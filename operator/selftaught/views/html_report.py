"""The run's report: one self-contained HTML page in the run's store (`report/index.html`) with its
plots inside as PNG images (matplotlib) — no script, no stylesheet or font from anywhere else, so
it opens offline, from S3 or attached to an e-mail.

It shows accuracy per iteration (overall and per section, with majority vote and position
consistency), keep rate and training examples, generated tokens per kept example against fixed N,
time and GPU-hours per stage, and a table of every iteration's numbers. Everything on it is read
from the store (stage manifests, evaluation metrics), so it can be rendered again at any time: by
the stage process that finishes a run (`stage_process.py`, in a pod too), at the end of
`selftaught run`, and by `selftaught report`.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from typing import Any

from selftaught.api.spec import SelfTaughtRun
from selftaught.pipeline.planner import plan
from selftaught.pipeline.scan import Progress, scan
from selftaught.pipeline.table import StageRef
from selftaught.store import ObjectNotFound, Store
from selftaught.store.layout import REPORT, metrics_output
from selftaught.store.manifest import published_key
from selftaught.views import plots
from selftaught.views.estimate import Estimate, Inputs, estimate, inputs_for, measure
from selftaught.views.live import duration

#: (key, heading, format) of the iteration table's columns
COLUMNS = (
    ("iteration", "iteration", "d"),
    ("tried", "tried", ",d"),
    ("kept", "kept", ",d"),
    ("keepRate", "keep rate", ".4f"),
    ("trainingExamples", "training examples", ",d"),
    ("tokensPerKept", "tokens / kept", ".1f"),
    ("fixedNTokensPerKept", "fixed-N tokens / kept", ".1f"),
    ("reward", "reward (GRPO)", ".4f"),
    ("trainAccuracy", "training-pair accuracy (GRPO)", ".4f"),
    ("accuracy", "accuracy", ".4f"),
    ("overall", "benchmark overall", ".4f"),
    ("positionConsistent", "position consistent", ".4f"),
    ("majorityVote", "majority vote", ".4f"),
    ("voteSamplesPerExample", "vote samples / example", ".2f"),
    ("voteTokens", "vote tokens", ",d"),
    ("voteTokensSaved", "vote tokens saved", ",d"),
)


@dataclass
class ReportData:
    name: str
    store: str
    seed: str
    samples: int
    stages_done: int
    stages_total: int
    iterations: list[dict[str, Any]] = field(default_factory=list)
    #: per iteration, section (or custom subset) -> score
    sections: dict[int, dict[str, float]] = field(default_factory=dict)
    estimate: Estimate | None = None
    #: whether iterations have a judge stage (not with train.method grpo)
    judge_stage: bool = True
    #: GRPO: per iteration, the reward and accuracy of the judgments sampled while training
    curves: dict[int, list[dict[str, float]]] = field(default_factory=dict)


def collect(store: Store, run: SelfTaughtRun, progress: Progress, cost: Estimate) -> ReportData:
    """The report's numbers from the run's manifests and evaluation metrics."""
    spec = run.spec
    step = plan(spec, progress.done)
    rows: dict[int, dict[str, Any]] = {}
    sections: dict[int, dict[str, float]] = {}
    curves: dict[int, list[dict[str, float]]] = {}
    for ref in sorted(progress.manifests):
        manifest = progress.manifests[ref]
        if ref.name == "judge":
            row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
            row.update({k: manifest.summary.get(k) for k in ("tried", "kept", "keepRate", "trainingExamples", "tokensPerKept", "fixedNTokensPerKept")})
        elif ref.name == "train":
            row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
            row.update({k: manifest.summary.get(k) for k in ("checkpoint", "reward", "trainAccuracy")})
            if manifest.summary.get("curve"):
                curves[ref.iteration] = list(manifest.summary["curve"])
        elif ref.name == "evaluate":
            row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
            keys = ("accuracy", "overall", "positionConsistent", "majorityVote", "voteSamplesPerExample", "voteTokens", "voteTokensSaved")
            row.update({k: manifest.summary.get(k) for k in keys})
            sections[ref.iteration] = _sections(store, ref)
    return ReportData(
        name=f"{run.metadata.namespace}/{run.metadata.name}",
        store=store.uri,
        seed=spec.models.seed.source,
        samples=spec.judge.samples,
        stages_done=len(step.done),
        stages_total=step.total,
        iterations=[rows[i] for i in sorted(rows)],
        sections=sections,
        estimate=cost,
        judge_stage=spec.judge_stage,
        curves=curves,
    )


def _sections(store: Store, ref: StageRef) -> dict[str, float]:
    """The benchmark's sections of an evaluation, or, for held-out pairs, its custom subsets."""
    try:
        metrics = json.loads(store.read_bytes(published_key(store, *metrics_output(ref.iteration))))
    except (ObjectNotFound, ValueError):
        return {}
    found = metrics.get("sections") or (metrics.get("custom") or {}).get("subsets") or {}
    return {name: value for name, value in found.items() if isinstance(value, int | float)}


def render(data: ReportData) -> str:
    """The page (pure: the same data, the same page but for the time it was made)."""
    iterations = [row["iteration"] for row in data.iterations]
    evaluated = [row for row in data.iterations if row.get("accuracy") is not None]
    judged = [row for row in data.iterations if row.get("tried") is not None]
    names = sorted({name for values in data.sections.values() for name in values})
    figures = [
        ("accuracy", "Accuracy per iteration", "Accuracy of each iteration's judge (0 is the seed), overall and per section (dashed), "
         "with majority vote and position consistency beside it.",
         plots.accuracy(
             [row["iteration"] for row in evaluated],
             {label: [row.get(key) for row in evaluated] for key, label in (("accuracy", "accuracy"), ("overall", "benchmark overall"),
                                                                              ("majorityVote", "majority vote"), ("positionConsistent", "position consistent"))},
             {name: [data.sections.get(row["iteration"], {}).get(name) for row in evaluated] for name in names},
         )),
    ]  # fmt: skip
    if data.judge_stage:
        figures += [
        ("keep", "Keep rate and training examples", "Items with a correct judgment kept, of those tried, and the A/B-balanced examples trained on.",
         plots.keep([row["iteration"] for row in judged], [row.get("keepRate") for row in judged], [row.get("trainingExamples") for row in judged])),
        ("tokens", "Generated tokens per kept example", f"What a kept judgment cost with adaptive rounds, against always sampling N = {data.samples}.",
         plots.tokens([row["iteration"] for row in judged], [row.get("tokensPerKept") for row in judged], [row.get("fixedNTokensPerKept") for row in judged], data.samples)),
        ]  # fmt: skip
    else:
        figures.append(("rewards", "Reward and accuracy while training (GRPO)",
                        "The mean reward and the fraction of right verdicts of the judgments each iteration's train stage sampled "
                        "of the training pairs, per logged step.", plots.rewards(data.curves)))  # fmt: skip
    cost = data.estimate
    finished = [row for row in cost.rows if row.measured] if cost else []
    figures.append(("cost", "Time and GPU-hours per stage", "Measured for the finished stages: a stage's process time (summed over its shards), and the GPUs it held.",
                    plots.cost([r.label for r in finished], [r.hours for r in finished], [r.gpu_hours for r in finished])))  # fmt: skip
    body = [
        f"<h1>selftaught run {_e(data.name)}</h1>",
        f'<p class="meta">seed judge <code>{_e(data.seed)}</code> · {data.stages_done} of {data.stages_total} stages done · '
        f"{len(iterations)} iteration(s) reported · store <code>{_e(data.store)}</code> · made {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>",
    ]
    for key, title, caption, png in figures:
        body.append(f"<h2>{_e(title)}</h2>")
        if png is None:
            body.append(f'<p class="empty" id="empty-{key}">Nothing to show yet.</p>')
            continue
        source = "data:image/png;base64," + base64.b64encode(png).decode()
        body.append(f'<figure><img id="plot-{key}" alt="{_e(title)}" src="{source}"><figcaption>{_e(caption)}</figcaption></figure>')
    body += ["<h2>Iterations</h2>", _iteration_table(data)]
    if cost is not None:
        body += ["<h2>Stages</h2>", _stage_table(cost)]
    return PAGE.format(title=_e(f"selftaught report: {data.name}"), body="\n".join(body))


def _iteration_table(data: ReportData) -> str:
    head = "".join(f"<th>{_e(heading)}</th>" for _, heading, _ in COLUMNS) + "<th>checkpoint</th>"
    rows = []
    for row in data.iterations:
        cells = []
        for key, _, spec in COLUMNS:
            value = row.get(key)
            if isinstance(value, float) and spec.endswith("d"):  # a count summed as a float in a manifest (voteTokens 275.0)
                value = round(value)
            shown = "" if value is None else format(value, spec)
            raw = "" if value is None else json.dumps(value)
            cells.append(f'<td data-key="{key}" data-value="{_e(raw)}">{shown}</td>')
        cells.append(f'<td data-key="checkpoint"><code>{_e(row.get("checkpoint") or "")}</code></td>')
        rows.append(f'<tr data-iteration="{row["iteration"]}">{"".join(cells)}</tr>')
    return f'<table id="iterations"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _stage_table(cost: Estimate) -> str:
    rows = []
    for row in cost.rows:
        status = "done" if row.measured else "to run (estimate)"
        rows.append(
            f'<tr data-stage="{_e(row.label)}"><td>{_e(row.label)}</td><td>{status}</td><td>{_e(row.processes)}</td>'
            f'<td data-key="seconds">{row.hours * 3600:,.1f}</td><td data-key="gpuHours">{row.gpu_hours:,.2f}</td>'
            f'<td data-key="generatedTokens">{row.generated_tokens:,.0f}</td></tr>'
        )
    total = (
        f"<tr><th>total</th><td></td><td>GPU kind {_e(cost.gpu)}</td><td>{duration(cost.hours * 3600)}</td>"
        f"<td>{cost.gpu_hours:,.2f}</td><td>{cost.generated_tokens:,.0f}</td></tr>"
    )
    head = "<tr><th>stage</th><th>status</th><th>runs as</th><th>seconds</th><th>GPU-hours</th><th>generated tokens</th></tr>"
    notes = "".join(f"<li>{_e(line)}</li>" for line in cost.assumptions)
    return f'<table id="stages"><thead>{head}</thead><tbody>{"".join(rows)}{total}</tbody></table><ul class="assumptions">{notes}</ul>'


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.15rem; margin-top: 2rem; }}
.meta, figcaption, .assumptions {{ color: #555; font-size: 0.9rem; }}
figure {{ margin: 0; }} img {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
code {{ font-size: 0.85rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def write_report(store: Store, run: SelfTaughtRun, inputs: Inputs | None = None) -> str:
    """Render the report of the run in `store` and write it there; its URL (a path for a local
    store). `inputs`: the estimate's (a local run's machine and counts); a cluster's by default."""
    progress = scan(store)
    cost = estimate(run.spec, inputs or inputs_for(run.spec), measure(progress.manifests))
    store.write_text(REPORT, render(collect(store, run, progress, cost)))
    return store.url(REPORT)
