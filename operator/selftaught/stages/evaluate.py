"""evaluate (iteration i): judge M(i) on held-out pairs, scored the RewardBench way, plus
position-consistent accuracy (both orders) and majority vote over k samples. The scoring itself
is `method.metrics`; this module only asks the engine and writes what it scored."""

from __future__ import annotations

import json

from selftaught.chat import Sampling
from selftaught.method.judging import JudgeItem, random_order
from selftaught.method.metrics import Scoreboard, score_example
from selftaught.method.selection import priority
from selftaught.stages.context import in_shard
from selftaught.stages.contract import MapReduceStage, ShardResult
from selftaught.stages.judge import judge_model
from selftaught.stages.sources import iter_evaluation_pairs
from selftaught.store.jsonl import SkipCounter, read_jsonl
from selftaught.store.layout import PAIRS_HELDOUT, metrics_key
from selftaught.store.manifest import Manifest


def evaluation_pairs(ctx, skipped: SkipCounter):
    data = ctx.spec.data.evaluation
    if data.source:
        return iter_evaluation_pairs(data, ctx.spec.storage, skipped)
    return read_jsonl(ctx.store, PAIRS_HELDOUT)


def _item(pair, order) -> JudgeItem:
    return JudgeItem(pair["id"], order, pair["prompt"], pair["chosen"], pair["rejected"])


class Evaluate(MapReduceStage):
    name = "evaluate"

    def model(self, ctx):
        return judge_model(ctx, ctx.stage.iteration)

    def map_shard(self, ctx, shard, out, engine):
        settings, seed = ctx.spec.evaluate, ctx.spec.seed
        skipped = SkipCounter()
        pairs = list(in_shard(evaluation_pairs(ctx, skipped), shard, ctx.num_shards))
        board = Scoreboard()
        if pairs:
            shown = [_item(p, random_order(p["id"], seed)) for p in pairs]
            requests = [item.messages() for item in shown]
            if settings.position_consistency:
                requests += [_item(p, "BA" if s.order == "AB" else "AB").messages() for p, s in zip(pairs, shown, strict=True)]
            greedy = engine.chat(requests, Sampling(n=1, temperature=0.0, max_tokens=settings.max_tokens))
            votes = None
            if settings.majority_vote:
                seeds = [priority(seed, f"vote:{p['id']}") % 2**31 for p in pairs]
                votes = engine.chat(
                    requests[: len(pairs)],
                    Sampling(n=settings.majority_vote, temperature=0.7, top_p=0.9, max_tokens=settings.max_tokens),
                    seeds,
                )
            for index, (pair, item) in enumerate(zip(pairs, shown, strict=True)):
                scored = score_example(
                    pair["id"],
                    pair["subset"],
                    item.expected,
                    greedy[index][0].text,
                    order=item.order,
                    swapped_output=greedy[len(pairs) + index][0].text if settings.position_consistency else None,
                    vote_outputs=[s.text for s in votes[index]] if votes is not None else None,
                )
                board.add(scored)
                out.write(scored)
        counts = {"examples": len(pairs)}
        if shard == 0:
            counts["skipped_records"] = skipped.skipped
        return ShardResult(counts, partial={"scoreboard": board.to_json()}, skipped=skipped.examples if shard == 0 else [])

    def reduce(self, ctx, shard_manifests):
        board = Scoreboard()
        for manifest in shard_manifests:
            board.merge(Scoreboard.from_json(manifest.partial.get("scoreboard", {})))
        report = board.report()
        report["iteration"] = ctx.stage.iteration
        key = metrics_key(ctx.stage.iteration)
        ctx.store.write_text(key, json.dumps(report, indent=2))
        summary = {"accuracy": round(report["accuracy"], 4), "overall": round(report["overall"], 4), "examples": report["examples"]}
        for name, short in (("position_consistent_accuracy", "positionConsistent"), ("majority_vote_accuracy", "majorityVote")):
            if name in report:
                summary[short] = round(report[name], 4)
        return Manifest(
            stage=self.name,
            counts={"examples": report["examples"]},
            outputs={key: {}},
            seconds=sum(m.seconds for m in shard_manifests),
            summary=summary,
            skipped=[reason for m in shard_manifests for reason in m.skipped],
        )
