"""The pure heart of both executors: from the spec and the stages the store says are done,
which stages can run now, and is the run finished?

The local runner and the Kopf operator are thin executors around `plan()`; neither keeps
progress of its own, which is why either can be killed at any moment and started again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.pipeline.table import ORDER, StageRef


@dataclass(frozen=True)
class Node:
    ref: StageRef
    needs: tuple[StageRef, ...]


def evaluation_enabled(spec: SelfTaughtRunSpec) -> bool:
    evaluation = spec.data.evaluation
    return bool(evaluation.source) or evaluation.held_out_fraction > 0


def stage_graph(spec: SelfTaughtRunSpec) -> list[Node]:
    """Every stage of the run with what it needs, in execution order."""
    categorize, select, pairs = StageRef("categorize"), StageRef("select"), StageRef("pairs")
    nodes = [Node(categorize, ()), Node(select, (categorize,)), Node(pairs, (select,))]
    evaluate = evaluation_enabled(spec)
    if evaluate and spec.evaluate.baseline:
        nodes.append(Node(StageRef("evaluate", 0), (pairs,)))
    for i in range(1, spec.iterations + 1):
        judge, train = StageRef("judge", i), StageRef("train", i)
        if spec.judge_stage:
            # from iteration 2 the judge sizes its rounds from what the previous one drew (`judged.jsonl`)
            nodes.append(Node(judge, (pairs,) if i == 1 else (pairs, StageRef("judge", i - 1), StageRef("train", i - 1))))
            nodes.append(Node(train, (judge,)))
        else:  # grpo: the train stage samples its own judgments of the pairs, from M(i-1), which it trains
            nodes.append(Node(train, (pairs,) if i == 1 else (pairs, StageRef("train", i - 1))))
        if evaluate:
            nodes.append(Node(StageRef("evaluate", i), (train,)))
    return sorted(nodes, key=lambda n: (n.ref.iteration, ORDER[n.ref.name]))


@dataclass
class Plan:
    ready: list[StageRef] = field(default_factory=list)
    waiting: list[StageRef] = field(default_factory=list)
    done: list[StageRef] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.ready and not self.waiting

    @property
    def total(self) -> int:
        return len(self.ready) + len(self.waiting) + len(self.done)

    @property
    def current(self) -> StageRef | None:
        """The stage a user would say the run is "at"."""
        return self.ready[0] if self.ready else (self.waiting[0] if self.waiting else None)


def plan(spec: SelfTaughtRunSpec, done: set[StageRef] | frozenset[StageRef]) -> Plan:
    result = Plan()
    for node in stage_graph(spec):
        if node.ref in done:
            result.done.append(node.ref)
        elif all(need in done for need in node.needs):
            result.ready.append(node.ref)
        else:
            result.waiting.append(node.ref)
    return result
