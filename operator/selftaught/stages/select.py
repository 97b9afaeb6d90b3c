"""select: a balanced, challenging, de-duplicated subset of the categorized instructions, without
those that match the evaluation set (`data.decontaminate`)."""

from __future__ import annotations

import logging

from selftaught.errors import EmptyDataset, ObjectNotFound
from selftaught.method.contamination import Tally
from selftaught.method.selection import Selector
from selftaught.stages.contract import Stage
from selftaught.stages.decontaminate import evaluation_prompts
from selftaught.store.jsonl import read_jsonl, write_jsonl
from selftaught.store.layout import CATEGORIZED, SELECTED
from selftaught.store.manifest import Manifest, read_manifest

log = logging.getLogger(__name__)


class Select(Stage):
    name = "select"

    def run(self, ctx):
        categorized = read_manifest(ctx.store, CATEGORIZED)
        if categorized is None:  # the planner never starts select before categorize is done
            raise ObjectNotFound(f"{ctx.store.url(CATEGORIZED)}: select needs the categorize stage's output")
        selector = Selector(ctx.spec.select, ctx.spec.seed)
        # the cheapest honest place: every instruction passes here once, on a CPU, before any pair is written
        guard, policy, tally = evaluation_prompts(ctx.spec), ctx.spec.data.decontaminate, Tally()
        for key in categorized.outputs:  # in shard order (the keys name attempts, which sort randomly)
            for record in read_jsonl(ctx.store, key):
                match = guard.match(record["instruction"]) if guard is not None else None
                if guard is not None:
                    tally.add(match, record["id"])
                if match is None or policy == "warn":
                    selector.offer(record)
        written = write_jsonl(ctx.store, ctx.output_key(SELECTED[1]), selector.selected())
        counts: dict[str, float] = dict(selector.counts)
        if guard is not None:
            counts.update(contamination_checked=tally.checked, contaminated_exact=tally.exact, contaminated_near=tally.near)
            log.info("%s", tally.describe(policy))
        if written.records == 0:
            raise EmptyDataset(
                "no instruction passed selection: "
                + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                + f" (categories {ctx.spec.select.categories}, minComplexity {ctx.spec.select.min_complexity})"
            )
        return Manifest(
            stage=self.name,
            counts=counts,
            outputs={written.key: written.as_dict()},
            summary={"selected": written.records, **contamination_summary(tally, policy, guard is not None)},
        )


def contamination_summary(tally: Tally, policy: str, checked: bool) -> dict[str, object]:
    """`decontaminated`: instructions dropped as they match the evaluation set (`contaminated`
    under `warn`: matched and kept); the first few, named, for the report."""
    if not checked:
        return {}
    summary: dict[str, object] = {"decontaminated" if policy == "drop" else "contaminated": tally.matched}
    if tally.examples:
        summary["contaminationExamples"] = tally.examples
    return summary
