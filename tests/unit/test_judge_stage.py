"""The judge stage on a scripted engine (no vLLM): what it publishes for the next iteration, and how
the next iteration sizes its rounds from it."""

import random

from selftaught.api.load import parse_run
from selftaught.chat import Sample
from selftaught.pipeline.table import StageRef
from selftaught.stages import IMPLEMENTATIONS, StageContext, execute
from selftaught.store import LocalStore
from selftaught.store.layout import PAIRS_TRAIN, checkpoint_output, judged_output, manifest_key, sft_output
from selftaught.store.manifest import Manifest, write_manifest
from tests.stores import publish, read_output, shard_records

from .test_spec import MINIMAL

HARD = {"p0", "p1", "p2"}  # the judge is never right on these; always right on the others


class SeededJudge:
    """Right on every pair but the HARD ones; each sample's text comes from its request's seed, as
    vLLM's does. Records, per call, the samples asked for each item."""

    max_model_len = 4096

    def __init__(self):
        self.asked: list[dict[str, int]] = []  # per call: pair id and order -> n

    def prompt_tokens(self, conversations):
        return [sum(len(m["content"].split()) for m in c) for c in conversations]

    def chat(self, conversations, sampling, seeds=None):
        answers, asked = [], {}
        for messages, seed in zip(conversations, seeds, strict=True):
            text = messages[-1]["content"]
            pair = text.split("[User Question]\n")[1].split("\n")[0]
            chosen_first = text.index("good") < text.index("bad")
            right = ("A" if chosen_first else "B") if pair not in HARD else ("B" if chosen_first else "A")
            rng = random.Random(seed)
            answers.append([Sample(f"because {rng.random():.6f} [[{right}]]", 5) for _ in range(sampling.n)])
            key = f"{pair}:{'AB' if chosen_first else 'BA'}"
            asked[key] = asked.get(key, 0) + sampling.n
        self.asked.append(asked)
        return answers


def _judge_twice(tmp_path):
    run = parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "iterations": 2, "judge": {"samples": 8}}})
    store = LocalStore(tmp_path)
    publish(store, PAIRS_TRAIN, [{"id": f"p{i}", "instruction": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(12)])
    first, second = SeededJudge(), SeededJudge()
    execute(IMPLEMENTATIONS["judge"], StageContext(run=run, stage=StageRef("judge", 1), store=store, make_engine=lambda ctx, model: first))
    write_manifest(store, manifest_key(checkpoint_output(1)[0]), Manifest(stage="train", iteration=1))  # M(1), as judge-2 finds it
    ctx = StageContext(run=run, stage=StageRef("judge", 2), store=store, make_engine=lambda ctx, model: second)
    manifest = execute(IMPLEMENTATIONS["judge"], ctx)
    return store, ctx, first, second, manifest


def test_the_judge_publishes_every_item_it_tried_and_what_it_drew(tmp_path):
    store, _, first, _, _ = _judge_twice(tmp_path)
    judged = {f"{r['id']}:{r['order']}": r for r in read_output(store, judged_output(1))}
    assert len(judged) == 24  # 12 pairs in both orders, kept or not
    assert all(judged[key] == {"id": key[:-3], "order": key[-2:], "samples": 8, "correct": 0} for key in judged if key.split(":")[0] in HARD)
    assert all(judged[key]["samples"] == 1 and judged[key]["correct"] == 1 for key in judged if key.split(":")[0] not in HARD)
    assert {r["id"] for r in read_output(store, sft_output(1))} == {key for key in judged if key.split(":")[0] not in HARD}
    assert first.asked[0] == dict.fromkeys(judged, 1)  # iteration 1 knows nothing: firstRound for all


def test_the_next_iteration_gives_items_that_needed_many_samples_a_bigger_first_round(tmp_path):
    _, _, _, second, manifest = _judge_twice(tmp_path)
    first_round: dict[str, int] = {}  # every item takes part in the first round: its first request
    for call in second.asked:
        for key, n in call.items():
            first_round.setdefault(key, n)
    assert len(first_round) == 24 and manifest.counts["with_history"] == 24
    assert all(n == 1 for key, n in first_round.items() if key.split(":")[0] not in HARD)
    assert all(n > 1 for key, n in first_round.items() if key.split(":")[0] in HARD)
    assert manifest.counts["samples"] == 18 * 1 + 6 * 8  # the easy ones one each, the hard ones all N
    assert len(second.asked) == manifest.counts["rounds"]  # items of different sizes, still one batch a round


def test_a_resumed_shard_draws_and_keeps_what_the_interrupted_one_did(tmp_path):
    store, ctx, _, _, _ = _judge_twice(tmp_path)
    ref = StageRef("judge", 2)
    kept = shard_records(store, ref.shard_manifest_key(0))
    for key in store.list(f"{ref.prefix}/"):  # as if the stage had died before its marker
        store.delete(key)
    again = SeededJudge()
    execute(IMPLEMENTATIONS["judge"], StageContext(run=ctx.run, stage=ref, store=store, make_engine=lambda ctx, model: again))
    assert shard_records(store, ref.shard_manifest_key(0)) == kept


class MostlyRightJudge(SeededJudge):
    """Never right on the HARD pairs; on the others each sample is wrong with probability 0.4
    (drawn from its request's seed): for DPO, a right and a wrong judgment come soon."""

    def chat(self, conversations, sampling, seeds=None):
        answers = super().chat(conversations, sampling, seeds)
        flipped = []
        for samples, seed, messages in zip(answers, seeds, conversations, strict=True):
            rng = random.Random(seed + 1)
            hard = messages[-1]["content"].split("[User Question]\n")[1].split("\n")[0] in HARD
            swap = {"[[A]]": "[[B]]", "[[B]]": "[[A]]"}
            flipped.append([
                Sample(s.text[:-5] + swap[s.text[-5:]], s.tokens) if not hard and rng.random() < 0.4 else s for s in samples
            ])  # fmt: skip
        return flipped


def test_for_dpo_the_judge_publishes_balanced_pairs_of_a_right_and_a_wrong_judgment(tmp_path):
    from selftaught.store.layout import preference_output

    run = parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "judge": {"samples": 8, "firstRound": 1}, "train": {"method": "dpo"}}})
    store = LocalStore(tmp_path)
    publish(store, PAIRS_TRAIN, [{"id": f"p{i}", "instruction": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(12)])
    engine = MostlyRightJudge()
    manifest = execute(IMPLEMENTATIONS["judge"], StageContext(run=run, stage=StageRef("judge", 1), store=store, make_engine=lambda ctx, model: engine))
    pairs = read_output(store, preference_output(1))
    # HARD items are never right (no pair); the others find a right and a wrong one, unless all 8 were right
    always_right = manifest.counts.get("no_wrong", 0)
    assert len(pairs) == 18 - always_right and always_right <= 2 and manifest.counts["no_correct"] == 6
    assert sum(p["winner"] == "A" for p in pairs) == len(pairs) / 2  # balanced by the winner
    for pair in pairs:
        right = pair["winner"]
        assert pair["chosen"].endswith(f"[[{right}]]") and not pair["rejected"].endswith(f"[[{right}]]")
        assert pair["messages"][-1]["content"].count("good") == 1
    assert manifest.summary["pairs"] == 18 - always_right and manifest.summary["trainingExamples"] == len(pairs)
    assert manifest.counts["samples_for_rejected"] > 0  # the price of DPO's second judgment, reported
    assert not store.exists(f"{StageRef('judge', 1).prefix}/sft.jsonl")


class BothFormatsJudge(SeededJudge):
    """Pairwise as SeededJudge; a rating conversation gets 7 for "good", and for "bad" 3, or 7 (a
    tie) when its request's seed says so, or nothing readable."""

    def chat(self, conversations, sampling, seeds=None):
        rated = [i for i, c in enumerate(conversations) if "[Your judgement]" in c[-1]["content"]]
        pairwise = [i for i in range(len(conversations)) if i not in rated]
        answers = [None] * len(conversations)
        if pairwise:
            for i, samples in zip(pairwise, super().chat([conversations[i] for i in pairwise], sampling, [seeds[i] for i in pairwise]), strict=True):
                answers[i] = samples
        for i in rated:
            good = "[Response]\ngood\n" in conversations[i][-1]["content"]
            rng = random.Random(seeds[i])
            answers[i] = [Sample("Fine. 7" if good else rng.choice(["Poor. 3", "Same. 7", "Hmm"]), 2) for _ in range(sampling.n)]
        return answers


def test_a_pairwise_and_pointwise_judge_keeps_both_kinds_and_says_why_ratings_were_not_kept(tmp_path):
    run = parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "judge": {"samples": 8, "format": "pairwise+pointwise"}}})
    store = LocalStore(tmp_path)
    publish(store, PAIRS_TRAIN, [{"id": f"p{i}", "instruction": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(12)])
    engine = BothFormatsJudge()
    manifest = execute(IMPLEMENTATIONS["judge"], StageContext(run=run, stage=StageRef("judge", 1), store=store, make_engine=lambda ctx, model: engine))
    examples = read_output(store, sft_output(1))
    rated = [e for e in examples if ":rating:" in e["id"]]
    kept = manifest.counts["kept_pointwise"]  # a pair is kept unless none of its 8 rating pairs had "bad" below "good"
    assert kept >= 10 and len(rated) == 2 * kept  # a rating of each answer
    assert all(e["completion"] == "Fine. 7" for e in rated if e["id"].endswith(":chosen"))
    assert all(e["completion"] == "Poor. 3" for e in rated if e["id"].endswith(":rejected"))
    assert len(examples) - len(rated) == 18  # pairwise: the 9 easy pairs in both orders, balanced
    summary = manifest.summary
    assert summary["keptPointwise"] == kept and summary["ties"] > 0 and manifest.counts["unparsed"] > 0
    judged = {f"{r['id']}:{r['order']}" for r in read_output(store, judged_output(1))}
    assert "p0:rating" in judged and len(judged) == 36  # the next iteration sizes the rating items too
