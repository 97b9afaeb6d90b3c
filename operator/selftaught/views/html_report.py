"""The run's report: one self-contained HTML page in the run's store (`report/index.html`) with its
plots inside as PNG images (matplotlib) — no script, no stylesheet or font from anywhere else, so
it opens offline, from S3 or attached to an e-mail.

It opens with a verdict: the best iteration, its score with its 95 % interval against the seed's,
and whether the difference is larger than the noise (McNemar's test on the examples both judged).
Then what was evaluated (a benchmark, or the run's own held-out pairs), how many instructions the
contamination guard removed, accuracy per iteration with error bars and the chance line (overall
and per section, with majority vote, position consistency and the mean over both orders), keep
rate and training examples, generated tokens per kept example against fixed N, time and GPU-hours
per stage, and a table of every iteration's numbers with their intervals. Everything on it is read
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

from selftaught.api.benchmarks import BENCHMARKS
from selftaught.api.spec import SelfTaughtRun
from selftaught.method.intervals import paired
from selftaught.pipeline.planner import plan
from selftaught.pipeline.scan import Progress, located, scan
from selftaught.pipeline.table import StageRef
from selftaught.store import ObjectNotFound, Store
from selftaught.store.layout import REPORT, metrics_output
from selftaught.store.manifest import published_key, read_published
from selftaught.views import plots
from selftaught.views.estimate import Estimate, Inputs, estimate, inputs_for, measure
from selftaught.views.live import duration
from selftaught.views.numbers import estimate as with_interval

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
    ("evaluationExamples", "n", ",d"),
    ("accuracy", "accuracy [95% CI]", ".2f"),
    ("overall", "benchmark overall [95% CI]", ".2f"),
    ("orderA", "right answer as A", ".2f"),
    ("orderB", "right answer as B", ".2f"),
    ("bothOrders", "both orders", ".2f"),
    ("positionConsistent", "position consistent", ".2f"),
    ("majorityVote", "majority vote", ".2f"),
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
    #: per iteration, its evaluation's metrics.json (the scorer's report: intervals, per-example outcomes)
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: the benchmark the evaluation set is scored as (`api/benchmarks.py`: its chance)
    benchmark: str = "rewardbench"
    #: what the contamination guard did (None: no evaluation source to guard against)
    contamination: str | None = None


def collect(store: Store, run: SelfTaughtRun, progress: Progress, cost: Estimate) -> ReportData:
    """The report's numbers from the run's manifests and evaluation metrics."""
    spec = run.spec
    step = plan(spec, progress.done)
    rows: dict[int, dict[str, Any]] = {}
    sections: dict[int, dict[str, float]] = {}
    metrics: dict[int, dict[str, Any]] = {}
    curves: dict[int, list[dict[str, float]]] = {}
    for ref in sorted(progress.manifests):
        manifest = progress.manifests[ref]
        if ref.name == "judge":
            row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
            row.update({k: manifest.summary.get(k) for k in ("tried", "kept", "keepRate", "trainingExamples", "tokensPerKept", "fixedNTokensPerKept")})
        elif ref.name == "train":
            row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
            row.update({k: manifest.summary.get(k) for k in ("checkpoint", "reward", "trainAccuracy")})
            if row.get("checkpoint"):
                row["checkpoint"] = located(store.url(), row["checkpoint"])
            if manifest.summary.get("curve"):
                curves[ref.iteration] = list(manifest.summary["curve"])
        elif ref.name == "evaluate":
            row = rows.setdefault(ref.iteration, {"iteration": ref.iteration})
            keys = ("evaluated", "accuracy", "accuracyInterval", "overall", "overallInterval", "orderA", "orderAInterval", "orderB", "orderBInterval",
                    "bothOrders", "bothOrdersInterval", "positionConsistent", "positionConsistentInterval", "majorityVote", "majorityVoteInterval",
                    "voteSamplesPerExample", "voteTokens", "voteTokensSaved")  # fmt: skip
            row.update({k: manifest.summary.get(k) for k in keys})
            row["evaluationExamples"] = manifest.summary.get("examples")
            metrics[ref.iteration] = _metrics(store, ref)
            sections[ref.iteration] = _sections(metrics[ref.iteration])
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
        metrics=metrics,
        benchmark=spec.evaluation_benchmark,
        contamination=_contamination(spec, progress),
    )


def _metrics(store: Store, ref: StageRef) -> dict[str, Any]:
    try:
        found = json.loads(read_published(store, published_key(store, *metrics_output(ref.iteration))))
    except (ObjectNotFound, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _sections(metrics: dict[str, Any]) -> dict[str, float]:
    """The benchmark's sections of an evaluation, or, for held-out pairs, its custom subsets."""
    found = metrics.get("sections") or (metrics.get("custom") or {}).get("subsets") or {}
    return {name: value for name, value in found.items() if isinstance(value, int | float)}


def _contamination(spec: Any, progress: Progress) -> str | None:
    """What the contamination guard did, from select's manifest (None: no evaluation source)."""
    if not spec.data.evaluation.source:
        return None
    if spec.data.decontaminate == "off":
        return "Contamination: not checked (data.decontaminate: off)."
    manifest = progress.manifests.get(StageRef("select"))
    if manifest is None:
        return "Contamination: select has not run yet; it drops the instructions that match the evaluation set." if spec.data.decontaminate == "drop" else None
    dropped, kept = manifest.summary.get("decontaminated"), manifest.summary.get("contaminated")
    checked = int(manifest.counts.get("contamination_checked", 0))
    if dropped is None and kept is None:
        return "Contamination: not checked (select ran before selftaught looked)."
    if dropped is not None:
        return f"Contamination: {dropped:,} of {checked:,} instructions matched the evaluation set and were removed before training."
    return f"Contamination: {kept:,} of {checked:,} instructions match the evaluation set and were kept (data.decontaminate: warn)."


def _headline(data: ReportData) -> str:
    """The number the verdict compares: the benchmark's overall where the evaluations have one,
    else accuracy (as `pipeline/served.py` chooses the judge to serve)."""
    return "overall" if any(m.get("overall") is not None for m in data.metrics.values()) else "accuracy"


def _evaluated(metrics: dict[str, Any]) -> str:
    """What an evaluation measured (metrics written before `evaluated` existed: inferred the same way)."""
    if metrics.get("evaluated"):
        return str(metrics["evaluated"])
    if (metrics.get("custom") or {}).get("examples") == metrics.get("examples"):
        return "custom set"
    benchmark = BENCHMARKS.get(str(metrics.get("benchmark")))
    return benchmark.title if benchmark else "the evaluation set"


def _on(metrics: dict[str, Any]) -> str:
    evaluated = _evaluated(metrics)
    return f"{metrics.get('examples', 0):,} held-out pairs" if evaluated == "held-out pairs" else f"{metrics.get('examples', 0):,} {evaluated} examples"


def verdict(data: ReportData) -> str:
    """The report's first line: which iteration is the best judge, its score and 95 % interval
    against the seed's, and whether the difference is larger than the noise (McNemar's test on the
    examples both were scored on, mid-p below 0.05)."""
    key = _headline(data)
    scored = {i: m for i, m in sorted(data.metrics.items()) if m.get(key) is not None}
    if not scored:
        return "No iteration has been evaluated yet."

    def number(metrics: dict[str, Any]) -> str:
        return with_interval(metrics[key], (metrics.get("intervals") or {}).get(key))

    seed = scored.get(0)
    trained = {i: m for i, m in scored.items() if i >= 1}
    name = "overall" if key == "overall" else "accuracy"
    if not trained:
        return f"Only the seed judge (iteration 0) has been evaluated: {name} {number(seed)} on {_on(seed)}."  # type: ignore[arg-type]
    best = max(trained, key=lambda i: (trained[i][key], -i))  # the earliest of equals
    head = f"Best judge: iteration {best}, {name} {number(trained[best])} on {_on(trained[best])}"
    if seed is None:
        return head + "; the seed was not evaluated (evaluate.baseline: false), so there is nothing to compare it with."
    difference = trained[best][key] - seed[key]
    against = f"{head}, against the seed's {number(seed)}: {difference:+.2f}"
    if not (seed.get("outcomes") and trained[best].get("outcomes")):
        return against + "; whether that is more than noise is not known (these evaluations recorded no per-example outcomes)."
    test = paired(seed["outcomes"], trained[best]["outcomes"])
    how = f"McNemar's mid-p {test.p_mid:.2g} on the {test.n:,} examples both judged: {test.better:,} better, {test.worse:,} worse"
    if difference <= 0:
        return f"No trained iteration beats the seed. {against} ({how})."
    if test.significant:
        return f"{against}, larger than the noise ({how})."
    return f"{against}, within the noise ({how}): these examples cannot tell the two judges apart."


def _caveats(data: ReportData) -> list[str]:
    """What keeps a number from being the leaderboard's, said once."""
    newest = data.metrics[max(data.metrics)] if data.metrics else {}
    notes = []
    whose = {"held-out pairs": "the held-out pairs, the run's own data", "custom set": "a custom set, pairs in subsets the benchmark does not know"}
    if newest and _evaluated(newest) in whose:
        notes.append(f"The evaluation set is {whose[_evaluated(newest)]}, scored in {BENCHMARKS[data.benchmark].title}'s format: "
                     "not a benchmark number.")  # fmt: skip
    if newest.get("partial") and newest.get("overall") is not None:
        missing = ", ".join(f"{name} (NaN: no prompt with both its ref and tied records)" if name in (newest.get("sections") or {}) else name
                            for name in newest.get("missing") or [])  # fmt: skip
        notes.append("Partial: the overall is over fewer sections or subsets than the leaderboard's" + (f" (missing {missing})." if missing else "."))
    if newest.get("rating_mode") and data.benchmark == "rewardbench":
        notes.append("Rating mode: each answer rated alone, not RewardBench's pairwise verdict; not comparable to its leaderboard.")
    return notes


def render(data: ReportData) -> str:
    """The page (pure: the same data, the same page but for the time it was made)."""
    iterations = [row["iteration"] for row in data.iterations]
    evaluated = [row for row in data.iterations if row.get("accuracy") is not None]
    judged = [row for row in data.iterations if row.get("tried") is not None]
    names = sorted({name for values in data.sections.values() for name in values})
    chance = BENCHMARKS[data.benchmark].chance
    series = (("accuracy", "accuracy"), ("overall", "benchmark overall"), ("bothOrders", "both orders"), ("majorityVote", "majority vote"),
              ("positionConsistent", "position consistent"))  # fmt: skip
    figures = [
        ("accuracy", "Accuracy per iteration", f"Accuracy of each iteration's judge (0 is the seed) with its 95% interval, overall and per section (dashed), "
         f"with the mean over both orders, majority vote and position consistency beside it; the dotted line is chance ({chance:.2f}).",
         plots.accuracy(
             [row["iteration"] for row in evaluated],
             {label: [row.get(key) for row in evaluated] for key, label in series},
             {name: [data.sections.get(row["iteration"], {}).get(name) for row in evaluated] for name in names},
             intervals={label: [row.get(f"{key}Interval") for row in evaluated] for key, label in series},
             chance=chance,
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
        f'<p class="verdict" id="verdict">{_e(verdict(data))}</p>',
        f'<p class="meta">seed judge <code>{_e(data.seed)}</code> · {data.stages_done} of {data.stages_total} stages done · '
        f"{len(iterations)} iteration(s) reported · store <code>{_e(data.store)}</code> · made {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>",
    ]
    if data.metrics:
        newest = data.metrics[max(data.metrics)]
        body.append(
            f'<p class="meta" id="evaluated">Evaluated on {_e(_on(newest))}; chance is {chance:.2f}. Every number has its 95% interval in brackets: '
            "Wilson's for a mean over examples, a bootstrap over examples (seeded) for a score that weights subsets.</p>"
        )
    if data.contamination:
        body.append(f'<p class="meta" id="contamination">{_e(data.contamination)}</p>')
    caveats = _caveats(data)
    if caveats:
        body.append('<ul class="caveats" id="caveats">' + "".join(f"<li>{_e(note)}</li>" for note in caveats) + "</ul>")
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
            if value is not None and row.get(f"{key}Interval"):
                shown = with_interval(value, row[f"{key}Interval"])
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
.meta, figcaption, .assumptions, .caveats {{ color: #555; font-size: 0.9rem; }}
.verdict {{ font-size: 1.05rem; font-weight: 600; }}
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
