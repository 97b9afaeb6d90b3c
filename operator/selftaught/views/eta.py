"""How much of the whole run is done and how long it has left: the estimate's stage times
(measured for finished stages), with each running stage's own progress in place of its estimate.
What `kubectl get selftaughtruns` shows (`Progress`, `ETA`) and what `selftaught run` says on each
`▶` line, pure like the estimate.

The time left is the longest chain of stages still to run on a cluster, where independent stages
(`evaluate-1` beside `judge-2`) run at once, and their sum for the local runner, which runs one
stage at a time. The percentage is of the run's stage times added up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.pipeline.planner import stage_graph
from selftaught.views.estimate import Estimate
from selftaught.views.live import StageView


@dataclass(frozen=True)
class Completion:
    percent: float
    eta_seconds: float


def completion(spec: SelfTaughtRunSpec, estimate: Estimate | None, live: Iterable[StageView] = (), *, one_at_a_time: bool = False) -> Completion | None:
    """The whole run's progress; None without an estimate (the instructions not counted yet)."""
    if estimate is None or estimate.unknown:
        return None
    rows = {row.label: row for row in estimate.rows}
    views = {view.stage: view for view in live}
    left: dict[str, float] = {}
    finish: dict[str, float] = {}
    done = total = 0.0
    for node in stage_graph(spec):  # needs come first
        label = node.ref.label
        row = rows.get(label)
        seconds = row.hours * 3600 if row is not None else 0.0
        total += seconds
        view = views.get(label)
        if row is not None and row.measured:
            left[label] = 0.0
            done += seconds
        elif view is not None:
            fraction = (view.percent or 0.0) / 100
            done += seconds * fraction
            left[label] = float(view.eta_seconds) if view.eta_seconds is not None else seconds * (1 - fraction)
        else:
            left[label] = seconds
        finish[label] = left[label] + max((finish[need.label] for need in node.needs), default=0.0)
    eta = sum(left.values()) if one_at_a_time else max(finish.values(), default=0.0)
    return Completion(percent=round(100 * done / total, 1) if total else 100.0, eta_seconds=eta)
