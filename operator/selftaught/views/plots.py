"""The report's plots, drawn with matplotlib (its Agg backend: no display, no fonts fetched) and
returned as PNG bytes to embed in the page. Each takes plain numbers and returns None when there
is nothing to draw."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Any, Any]:
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # not its font cache's news
    matplotlib.use("Agg", force=True)  # a file, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(width, height), dpi=100)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def accuracy(
    iterations: Sequence[int],
    series: dict[str, Sequence[float | None]],
    sections: dict[str, Sequence[float | None]],
    intervals: dict[str, Sequence[Sequence[float] | None]] | None = None,
    chance: float | None = None,
) -> bytes | None:
    """Accuracy per iteration: the main numbers (`series`: accuracy, overall, the mean over both
    orders, majority vote, position consistency) in solid lines, with error bars where `intervals`
    gives a series its 95 % intervals ([low, high] per iteration), each section dashed, and a
    dotted line at `chance`."""
    if not iterations or not any(v is not None for values in series.values() for v in values):
        return None
    figure, axes = _figure()
    if chance is not None:
        axes.axhline(chance, color="#555555", linestyle=":", linewidth=1.2, label=f"chance ({chance:.2f})")
    for index, (name, values) in enumerate(series.items()):
        bounds = (intervals or {}).get(name) or [None] * len(values)
        points = [(i, v, b) for i, v, b in zip(iterations, values, bounds, strict=True) if v is not None]
        if not points:
            continue
        dodge = (index - (len(series) - 1) / 2) * 0.03  # side by side, so that error bars at one iteration stay apart
        xs, ys = [p[0] + dodge for p in points], [p[1] for p in points]
        points = [(x, y, b) for x, (_, y, b) in zip(xs, points, strict=True)]
        color = COLORS[index % len(COLORS)]
        axes.plot(xs, ys, marker="o", linewidth=2, color=color, label=name)
        bars = [(x, y, b) for x, y, b in points if b]
        if bars:
            below = [y - b[0] for _, y, b in bars]
            above = [b[1] - y for _, y, b in bars]
            axes.errorbar([x for x, _, _ in bars], [y for _, y, _ in bars], yerr=[below, above], fmt="none", ecolor=color, capsize=4, linewidth=1.2)
    for index, (name, values) in enumerate(sections.items()):
        points = [(i, v) for i, v in zip(iterations, values, strict=True) if v is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker=".", linestyle="--", linewidth=1, color=COLORS[(index + 5) % len(COLORS)], label=name)
    axes.set_xlabel("iteration (0 = seed judge)")
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xticks(list(iterations))
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)


def keep(iterations: Sequence[int], keep_rate: Sequence[float | None], examples: Sequence[int | None]) -> bytes | None:
    """Keep rate (line, left axis) and training examples (bars, right axis) per iteration."""
    if not iterations:
        return None
    figure, axes = _figure()
    twin = axes.twinx()
    twin.bar(iterations, [e or 0 for e in examples], color=COLORS[0], alpha=0.35, label="training examples")
    axes.plot(iterations, [r if r is not None else float("nan") for r in keep_rate], marker="o", linewidth=2, color=COLORS[1], label="keep rate")
    axes.set_zorder(twin.get_zorder() + 1)
    axes.patch.set_visible(False)
    axes.set_xlabel("iteration")
    axes.set_ylabel("keep rate (kept / tried)")
    axes.set_ylim(0, 1.05)
    twin.set_ylabel("training examples")
    axes.set_xticks(list(iterations))
    lines = axes.get_legend_handles_labels()
    bars = twin.get_legend_handles_labels()
    axes.legend(lines[0] + bars[0], lines[1] + bars[1], fontsize=8, loc="lower right")
    return _png(figure)


def tokens(iterations: Sequence[int], adaptive: Sequence[float | None], fixed: Sequence[float | None], samples: int) -> bytes | None:
    """Generated tokens per kept example: adaptive rounds against always sampling N."""
    if not iterations:
        return None
    figure, axes = _figure()
    width = 0.38
    axes.bar([i - width / 2 for i in iterations], [v or 0 for v in adaptive], width, color=COLORS[2], label="adaptive (measured)")
    axes.bar([i + width / 2 for i in iterations], [v or 0 for v in fixed], width, color=COLORS[7], label=f"fixed N = {samples}")
    axes.set_xlabel("iteration")
    axes.set_ylabel("generated tokens per kept example")
    axes.set_xticks(list(iterations))
    axes.legend(fontsize=8)
    return _png(figure)


def cost(stages: Sequence[str], hours: Sequence[float], gpu_hours: Sequence[float]) -> bytes | None:
    """Time and GPU-hours per stage (horizontal bars; GPU-hours only where GPUs were held)."""
    if not stages:
        return None
    with_gpus = any(gpu_hours)
    figure, axes = _figure(height=max(2.4, 0.32 * len(stages) + 1.2))
    rows = list(range(len(stages)))
    if with_gpus:
        height = 0.4
        axes.barh([r - height / 2 for r in rows], hours, height, color=COLORS[0], label="hours")
        axes.barh([r + height / 2 for r in rows], gpu_hours, height, color=COLORS[3], label="GPU-hours")
        axes.set_xlabel("hours")
        axes.legend(fontsize=8)
    else:
        axes.barh(rows, [h * 3600 for h in hours], 0.6, color=COLORS[0])
        axes.set_xlabel("seconds (no GPU held)")
    axes.set_yticks(rows)
    axes.set_yticklabels(stages)
    axes.invert_yaxis()
    return _png(figure)


def rewards(curves: dict[int, Sequence[dict[str, float]]]) -> bytes | None:
    """GRPO: the reward (solid) and the accuracy on the training pairs (dashed) of the judgments
    sampled while training, per iteration, against the step (each iteration's curve in its color)."""
    if not any(curves.values()):
        return None
    figure, axes = _figure()
    for index, (iteration, points) in enumerate(sorted(curves.items())):
        color = COLORS[index % len(COLORS)]
        steps = [p["step"] for p in points]
        axes.plot(steps, [p.get("reward", float("nan")) for p in points], marker=".", linewidth=2, color=color, label=f"reward, iteration {iteration}")
        axes.plot(steps, [p.get("correct", float("nan")) for p in points], linestyle="--", linewidth=1, color=color, label=f"accuracy, iteration {iteration}")
    axes.set_xlabel("training step (within the iteration)")
    axes.set_ylabel("mean over the sampled judgments")
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)
