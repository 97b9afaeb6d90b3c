"""select: a balanced, challenging, de-duplicated subset of the categorized instructions."""

from __future__ import annotations

from selftaught.errors import EmptyDataset, ObjectNotFound
from selftaught.method.selection import Selector
from selftaught.stages.contract import Stage
from selftaught.store.jsonl import read_jsonl, write_jsonl
from selftaught.store.layout import CATEGORIZED, SELECTED
from selftaught.store.manifest import Manifest, read_manifest


class Select(Stage):
    name = "select"

    def run(self, ctx):
        categorized = read_manifest(ctx.store, CATEGORIZED)
        if categorized is None:  # the planner never starts select before categorize is done
            raise ObjectNotFound(f"{ctx.store.url(CATEGORIZED)}: select needs the categorize stage's output")
        selector = Selector(ctx.spec.select, ctx.spec.seed)
        for key in categorized.outputs:  # in shard order (the keys name attempts, which sort randomly)
            for record in read_jsonl(ctx.store, key):
                selector.offer(record)
        written = write_jsonl(ctx.store, ctx.output_key(SELECTED[1]), selector.selected())
        counts = dict(selector.counts)
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
            summary={"selected": written.records},
        )
