"""select: a balanced, challenging, de-duplicated subset of the categorized instructions."""

from __future__ import annotations

from selftaught.errors import EmptyDataset
from selftaught.method.selection import Selector
from selftaught.stages.base import Stage
from selftaught.store.jsonl import read_jsonl, write_jsonl
from selftaught.store.layout import SELECTED, StageRef
from selftaught.store.manifest import Manifest, read_manifest


class Select(Stage):
    name = "select"

    def finalize(self, ctx, shard_manifests):
        categorized = read_manifest(ctx.store, StageRef("categorize").manifest_key)
        assert categorized is not None, "select runs after categorize"
        selector = Selector(ctx.spec.select, ctx.spec.seed)
        for key in sorted(categorized.outputs):
            for record in read_jsonl(ctx.store, key):
                selector.offer(record)
        written = write_jsonl(ctx.store, SELECTED, selector.selected())
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
            outputs={SELECTED: written.as_dict()},
            summary={"selected": written.records},
        )
