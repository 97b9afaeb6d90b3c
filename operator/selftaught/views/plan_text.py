"""The plan a user sees before launch (`selftaught plan`, and `selftaught run` before its first
stage): the stages and what runs them, generated tokens, GPU-hours and time per stage, what
adaptive judging and early-stopped majority votes save, whether training fits its GPUs (and what
to change when it does not), and the assumptions underneath.

Here, unlike in the operator, the data can be counted (a local file's lines) and a local
checkpoint's parameters read (its safetensors headers); the arithmetic is `views/estimate.py`'s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from selftaught.api.spec import ModelSource, SelfTaughtRun
from selftaught.errors import SelftaughtError
from selftaught.views.estimate import Estimate, Executor, Inputs, inputs_for
from selftaught.views.live import duration


def count_records(source: str | None) -> int | None:
    """Non-blank lines of a local JSONL file, or of the `.jsonl` files under a local folder; None
    for anything else (S3, the Hub: counting would mean reading all of it)."""
    if not source or source.startswith(("s3://", "hf://")):
        return None
    path = Path(source.removeprefix("file://")).expanduser()
    files = [path] if path.is_file() else sorted(path.rglob("*.jsonl")) if path.is_dir() else []
    if not files:
        return None
    try:
        return sum(1 for file in files for line in file.open("rb") if line.strip())
    except OSError:
        return None


def local_size(model: ModelSource) -> tuple[float, float] | None:
    """Billions of parameters of a local checkpoint, from its safetensors headers (never a download)."""
    path = Path(model.source.removeprefix("file://")).expanduser()
    if model.source.startswith(("s3://", "hf://")) or not path.is_dir():
        return None
    from selftaught.engines.weights import weights_of

    try:
        weights = weights_of(model)
    except SelftaughtError:
        return None
    if weights is None:
        return None
    billions = sum(weights.parameters.values()) / 1e9
    return billions, billions


def plan_inputs(run: SelfTaughtRun, *, machine_gpu: str | None = None, executor: Executor | None = None) -> Inputs:
    """The estimate's inputs for `run` counted here: run by `executor` on GPUs of kind `machine_gpu`
    (the local runner's, `local/placement.py`) or, without them, as the operator would run it."""
    spec = run.spec
    instructions, examples = count_records(spec.data.instructions.source), count_records(spec.data.evaluation.source)
    inputs = inputs_for(
        spec,
        instructions=instructions,
        evaluation_examples=examples,
        seed_size=local_size(spec.models.seed),
        generator_size=local_size(spec.models.generator) if spec.models.generator else None,
        machine_gpu=machine_gpu,
        executor=executor,
    )
    return replace(inputs, contamination=contamination_line(run, instructions, examples))


#: the most local instructions the plan matches against the evaluation set itself (~1 s per 10,000)
PLAN_CONTAMINATION_LIMIT = 100_000


def contamination_line(run: SelfTaughtRun, instructions: int | None, examples: int | None) -> str | None:
    """What the contamination guard finds, before any model loads: counted here when both the
    instructions and the evaluation set are local files; else where select will count it."""
    spec = run.spec
    policy = spec.data.decontaminate
    if not spec.data.evaluation.source:
        return None  # the held-out pairs: the run's own instructions, split by pairs
    if policy == "off":
        return "contamination: not checked (data.decontaminate: off)"
    later = f"select matches them and {'drops' if policy == 'drop' else 'counts'} the matches (data.decontaminate: {policy})"
    if instructions is None or examples is None:
        return f"contamination: the instructions or the evaluation set are not local files, not read here; {later}"
    if instructions > PLAN_CONTAMINATION_LIMIT:
        return f"contamination: {instructions:,} instructions, more than the plan reads; {later}"
    from selftaught.stages.decontaminate import count_contaminated

    try:
        tally = count_contaminated(spec)
    except SelftaughtError as error:
        return f"contamination: not counted here ({error}); {later}"
    return tally.describe(policy) if tally is not None else None


def tokens(value: float) -> str:
    """1.2K, 34M, 1.1B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= size:
            return f"{value / size:.1f}{suffix}" if value < 10 * size else f"{value / size:.0f}{suffix}"
    return f"{value:.0f}"


def assumed_models(inputs: Inputs | None) -> list[str]:
    """The models the estimate prices at a size it assumed: neither read from a local checkpoint,
    nor given in spec.estimate, nor in the model's name."""
    if inputs is None:
        return []
    sizes = (("seed", inputs.seed), ("generator", inputs.generator))  # a generator that is the seed says seedSize
    return [f"models.{what} {size.total:g}B (set spec.estimate.{what}Size)" for what, size in sizes if size.known_from.startswith("assumed") and f"{what}Size" in size.known_from]


def gpu_hours(value: float) -> str:
    """`682`, `1,235`; `0.3` under 10: how every GPU-hour total is written (docs quote it)."""
    return f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def format_plan(name: str, estimate: Estimate, where: str, inputs: Inputs | None = None) -> str:
    """The plan as `selftaught plan` prints it. Its first line says when a model's size is only
    assumed (`inputs`): every number below rests on it."""
    memory = [estimate.train_memory.line()] if estimate.train_memory else []
    rows = estimate.rows
    first = f"plan of {name}: {len(rows)} stages, {where}"
    assumed = assumed_models(inputs)
    if assumed:
        first += f"; priced for an ASSUMED model size: {', '.join(assumed)}"
    if estimate.unknown:
        width = max([len("runs as"), *(len(row.processes) for row in rows)])
        lines = [first, "", f"{'stage':<12} {'runs as':<{width}} {'prompt tok':>10} {'generated':>10} {'GPU-h':>8} {'time':>8}"]
        lines += [f"{row.label:<12} {row.processes:<{width}} {'?':>10} {'?':>10} {'?':>8} {'?':>8}" for row in rows]
        lines += ["", f"no estimate yet: {estimate.unknown} (or plan --instructions N)", *memory]
        if estimate.contamination:
            lines += ["", estimate.contamination]
        lines += ["", "assumptions (docs/cost.md; override in spec.estimate or with --assume):", *(f"  {line}" for line in estimate.assumptions)]
        return "\n".join(lines)
    gpus = any(row.gpus for row in rows)
    width = max(len(row.processes) for row in rows)
    header = f"{'stage':<12} {'runs as':<{width}} {'prompt tok':>10} {'generated':>10} {'GPU-h':>8} {'time':>8}"
    lines = [first, "", header]
    for row in rows:
        if row.reused:
            saves = f"{row.saved_gpu_hours:,.1f} GPU-h, " if gpus else ""
            lines.append(f"{row.label:<12} {row.processes:<{width}} {'reused':>10} {'':>10} {'0.0' if gpus else '-':>8} {'0s':>8}  (reused: saves {saves}{duration(row.saved_hours * 3600)})")
            continue
        hours = f"{row.gpu_hours:8.1f}" if gpus else f"{'-':>8}"
        generation = row.kind == "generation" or row.prompt_tokens > 0  # a GRPO train stage generates its rollouts
        lines.append(
            f"{row.label:<12} {row.processes:<{width}} {tokens(row.prompt_tokens) if generation else '-':>10} "
            f"{tokens(row.generated_tokens) if generation else '-':>10} {hours} "
            f"{duration(row.hours * 3600):>8}" + ("  (measured)" if row.measured else "")
        )
    total = f"{estimate.gpu_hours:8.1f}" if gpus else f"{'-':>8}"
    prompt = sum(row.prompt_tokens for row in rows)
    lines.append(f"{'total':<12} {'':<{width}} {tokens(prompt):>10} {tokens(estimate.generated_tokens):>10} {total} {duration(estimate.hours * 3600):>8}")
    reused = [row for row in rows if row.reused]
    if reused:
        saved = sum(row.saved_hours for row in reused)
        cost = f": ~{gpu_hours(estimate.saved_gpu_hours)} GPU-hours saved, {gpu_hours(estimate.gpu_hours + estimate.saved_gpu_hours)} without reuse" if gpus else ""
        lines += ["", f"reuse: {len(reused)} stage(s) linked from earlier runs with the same keys ({', '.join(r.label for r in reused)}){cost}; "
                  f"~{duration(saved * 3600)} of stage time saved (spec.reuse, docs/experiments.md)"]  # fmt: skip
    adaptive = estimate.adaptive
    if adaptive is not None:
        saved = 1 - adaptive.tokens / adaptive.fixed_tokens if adaptive.fixed_tokens else 0.0
        cost = f", {adaptive.gpu_hours:,.1f} instead of {adaptive.fixed_gpu_hours:,.1f} GPU-hours" if gpus else ""
        lines += [
            "",
            f"adaptive judging: ~{adaptive.samples_per_item:.1f} samples per item instead of {adaptive.samples} (keep rate "
            f"{adaptive.keep_rate:.1%}): the judge stages generate {tokens(adaptive.tokens)} tokens instead of "
            f"{tokens(adaptive.fixed_tokens)} ({saved:.0%} fewer){cost}",
        ]
    votes = estimate.votes
    if votes is not None:
        saved = 1 - votes.tokens / votes.all_k_tokens if votes.all_k_tokens else 0.0
        cost = f", {votes.gpu_hours:,.1f} instead of {votes.all_k_gpu_hours:,.1f} GPU-hours" if gpus else ""
        how = "drawing all k" if votes.early_stop == "off" else f"stopped once decided ({votes.early_stop})"
        lines += [
            ("" if adaptive is not None else "\n")
            + f"majority votes {how}: ~{votes.samples_per_example:.1f} samples per example instead of {votes.k}: the evaluate stages "
            f"generate {tokens(votes.tokens)} tokens instead of {tokens(votes.all_k_tokens)} ({saved:.0%} fewer){cost}",
        ]
    if gpus:
        lines.append(f"in all ~{gpu_hours(estimate.gpu_hours)} GPU-hours; stage times added up: {duration(estimate.hours * 3600)} (stages that can overlap counted apart)")
    if memory:
        lines += ["", *memory]
    if estimate.contamination:
        lines += ["", estimate.contamination]
    lines += ["", "assumptions (docs/cost.md; override in spec.estimate or with --assume):", *(f"  {line}" for line in estimate.assumptions)]
    return "\n".join(lines)
