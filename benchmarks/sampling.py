"""Judge sampling schedules against fixed N and against the bound, on the same data.

The bound: drawing one judgment at a time and stopping at the first correct one, an item whose
judgments are right with probability p costs E[min(G, N)] = (1 - (1-p)^N) / p samples; no
schedule draws fewer. Every schedule keeps the same distribution of judgments
(method/judging.py), so what differs is what they draw.

Part 1 drives the real judge stage (both iterations, through the stage driver) with a simulated
judge whose per-item accuracy is drawn from a Beta distribution (mean 0.3 ... 0.9, concentration
2); in iteration 2 an item keeps its iteration-1 accuracy with probability rho, else draws a fresh
one. The bound is computed from the true accuracies.

Part 2 runs the real judge stage with vLLM on the tiny model. Iteration 2 is judged by the same
model (it stands in for M(1)), so the history it reads is the iteration-1 judging of that model.
The bound is estimated from the fixed-N run: an item with c correct of N draws needs
(N + 1) / (c + 1) samples in expectation when they are taken one at a time (N when c = 0).

Columns: samples and requests per item (a request is one item in one round: each costs a
prompt's prefill, mostly from the prefix cache after the first), rounds (passes over the shard),
engine calls (batches: one per round), generated tokens against fixed N and against the bound.

    OMP_NUM_THREADS=1 python benchmarks/sampling.py [--simulated-only]
"""

from __future__ import annotations

import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

#: schedule label -> the spec's judge settings (besides `samples`), and whether iteration 2 may
#: read iteration 1's counts (the fitted schedule without them shows what history adds)
SCHEDULES = {
    "fixed N": ({"adaptive": False}, True),
    "doubling 2,4,8 (old)": ({"schedule": "doubling", "firstRound": 2}, True),
    "fitted (new)": ({}, True),
    "fitted, no history": ({}, False),
    "fitted, 3 rounds": ({"rounds": 3}, True),
    "fitted, 3, no history": ({"rounds": 3}, False),
}


class SimulatedJudge:
    """Right with the item's own probability, drawn from each request's seed; every judgment is 40 tokens."""

    max_model_len = 1 << 20  # every prompt fits

    def __init__(self, skill: dict[str, float]):
        self.skill = skill
        self.calls = 0

    def prompt_tokens(self, conversations):
        return [sum(len(m["content"].split()) for m in messages) for messages in conversations]

    def chat(self, conversations, sampling, seeds=None):
        from selftaught.chat import Sample

        self.calls += 1
        results = []
        for index, messages in enumerate(conversations):
            user = messages[-1]["content"]
            key = re.search(r"\[User Question\]\n(.*)\n", user).group(1)
            chosen_first = user.index("good answer") < user.index("bad answer")
            rng = random.Random(seeds[index] if seeds else None)
            samples = []
            for _ in range(sampling.n):
                right = rng.random() < self.skill[key]
                verdict = ("A" if chosen_first else "B") if right else ("B" if chosen_first else "A")
                samples.append(Sample(f"reasoning ... [[{verdict}]]", 40))
            results.append(samples)
        return results


def bound_samples(p: float, samples: int) -> float:
    return samples if p <= 0 else (1 - (1 - p) ** samples) / p


def _run(folder: Path, name: str, samples: int, judge: dict, extra: dict | None = None):
    from selftaught.api.load import parse_run

    return parse_run({
        "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": name, "namespace": "bench"},
        "spec": {"models": {"seed": {"source": "sim"}}, "data": {"instructions": {"source": "x"}}, "storage": {"uri": str(folder)},
                 "iterations": 2, "judge": {"samples": samples, **judge}, **(extra or {})},
    })  # fmt: skip


def _stand_in_for_m1(store, model: Path | None = None) -> None:
    """Publish a train-1 whose checkpoint is `model` (or nothing the simulated judge reads)."""
    from selftaught.store.layout import checkpoint_output, manifest_key
    from selftaught.store.manifest import Manifest, write_manifest

    prefix, name = checkpoint_output(1)
    if model is not None:
        shutil.copytree(model, Path(store.uri) / prefix / name)
    write_manifest(store, manifest_key(prefix), Manifest(stage="train", iteration=1))


def _judge(run, iteration: int, engine):
    """The judge stage of `iteration` through the stage driver (map, reduce, publish), on `engine`."""
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.pipeline.table import StageRef
    from selftaught.stages.context import StageContext
    from selftaught.stages.contract import execute
    from selftaught.stages.judge import Judge

    ctx = StageContext(run=run, stage=StageRef("judge", iteration), store=open_run_store(run), make_engine=lambda ctx, model: engine)
    return execute(Judge(), ctx).counts


def _forget_history(store) -> None:
    from selftaught.store.layout import judged_output
    from selftaught.store.manifest import published_key

    store.delete(published_key(store, *judged_output(1)))


def _row(label, counts, fixed_tokens, bound_tokens, calls):
    items = counts["items"]
    return (
        f"{label:<22} {counts['samples'] / items:>8.2f} {counts['requests'] / items:>9.2f} {counts['rounds']:>6.0f} {calls:>6}"
        f" {counts['tokens'] / fixed_tokens:>9.3f} {counts['tokens'] / bound_tokens:>9.3f}"
    )


HEADER = f"{'schedule':<22} {'samp/item':>8} {'req/item':>9} {'rounds':>6} {'calls':>6} {'tok/fixed':>9} {'tok/bound':>9}"


def simulated(pairs: int = 2000, samples: int = 15, rhos: tuple[float, ...] = (0.5, 0.9)) -> None:
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.store.jsonl import write_jsonl
    from selftaught.store.layout import PAIRS_TRAIN, manifest_key
    from selftaught.store.manifest import Manifest, write_manifest

    print(f"simulated judge: {pairs} pairs x 2 orders, N = {samples}, 40 tokens per judgment, accuracy ~ Beta(mean, concentration 2)")
    rng = random.Random(0)
    for mean in (0.3, 0.5, 0.7, 0.9):
        first = {f"q{i}": rng.betavariate(2 * mean, 2 * (1 - mean)) for i in range(pairs)}
        seconds = {rho: {k: p if rng.random() < rho else rng.betavariate(2 * mean, 2 * (1 - mean)) for k, p in first.items()} for rho in rhos}
        tables: dict[str, list[str]] = {"iteration 1": []}
        for rho in rhos:
            tables[f"iteration 2, rho {rho}"] = []

        def bound(skill):
            return 2 * 40 * sum(bound_samples(p, samples) for p in skill.values())

        fixed_tokens = 2 * pairs * samples * 40
        for label, (judge, history) in SCHEDULES.items():
            for rho in rhos:
                with tempfile.TemporaryDirectory() as folder:
                    run = _run(Path(folder), "bench", samples, judge)
                    store = open_run_store(run)  # the pairs stage's output, as the judge stage finds it
                    write_jsonl(
                        store,
                        "/".join(PAIRS_TRAIN),
                        ({"id": f"p{i}", "instruction": f"q{i}", "chosen": "good answer", "rejected": "bad answer"} for i in range(pairs)),
                    )
                    write_manifest(store, manifest_key(PAIRS_TRAIN[0]), Manifest(stage="pairs"))
                    engine = SimulatedJudge(first)
                    counts = _judge(run, 1, engine)
                    if rho == rhos[0] and history:
                        tables["iteration 1"].append(_row(label, counts, fixed_tokens, bound(first), engine.calls))
                    _stand_in_for_m1(store)
                    if not history:
                        _forget_history(store)
                    engine = SimulatedJudge(seconds[rho])
                    counts = _judge(run, 2, engine)
                    tables[f"iteration 2, rho {rho}"].append(_row(label, counts, fixed_tokens, bound(seconds[rho]), engine.calls))
        for title, rows in tables.items():
            print(f"\nmean accuracy {mean}, {title}\n{HEADER}")
            print("\n".join(rows))


def real(samples: int = 8) -> None:
    """The judge stage with vLLM on the tiny model, iterations 1 and 2, each schedule on the same pairs."""
    from selftaught.dev.tiny_model import build_tiny_model, read_instructions
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.pipeline.table import StageRef
    from selftaught.stage_process import run_stage
    from selftaught.stages.context import StageContext, vllm_engine
    from selftaught.store.jsonl import read_jsonl
    from selftaught.store.layout import judged_output
    from selftaught.store.manifest import published_key

    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder) / "tiny", read_instructions(REPO / "examples/data/instructions.jsonl"), log=lambda _: None)
        quick = {"data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}, "evaluation": {"heldOutFraction": 0}},
                 "models": {"seed": {"source": str(model)}}, "generation": {"enforceEager": True, "maxModelLen": 2048},
                 "categorize": {"maxTokens": 24}, "pairs": {"maxTokens": 96}}  # fmt: skip

        def make(name, judge):
            return _run(Path(folder) / "runs", name, samples, {**judge, "maxTokens": 24}, quick)

        runs = {label: make(f"r{index}", judge) for index, (label, (judge, _)) in enumerate(SCHEDULES.items())}
        first = next(iter(runs.values()))
        for name in ("categorize", "select", "pairs"):
            run_stage(first, StageRef(name))
        source = Path(open_run_store(first).uri)
        for run in list(runs.values())[1:]:
            shutil.copytree(source, Path(open_run_store(run).uri), dirs_exist_ok=True)
        engine = vllm_engine(StageContext(run=first, stage=StageRef("judge", 1), store=open_run_store(first)), first.spec.models.seed)

        class Counting:  # the engine, with its calls counted
            calls = 0
            max_model_len = engine.max_model_len

            def prompt_tokens(self, conversations):
                return engine.prompt_tokens(conversations)

            def chat(self, *args, **kwargs):
                Counting.calls += 1
                return engine.chat(*args, **kwargs)

        results: dict[int, dict[str, tuple[dict, int]]] = {1: {}, 2: {}}
        for label, run in runs.items():
            store = open_run_store(run)
            for iteration in (1, 2):
                if iteration == 2:
                    _stand_in_for_m1(store, model)
                    if not SCHEDULES[label][1]:
                        _forget_history(store)
                Counting.calls = 0
                counts = _judge(run, iteration, Counting())
                results[iteration][label] = (counts, Counting.calls)
        print(f"\nreal judge stage (vLLM, tiny model), N = {samples}; iteration 2 judged by the same model")
        for iteration in (1, 2):
            fixed_run = runs["fixed N"]
            store = open_run_store(fixed_run)
            judged = list(read_jsonl(store, published_key(store, *judged_output(iteration))))
            fixed_counts = results[iteration]["fixed N"][0]
            per_sample = fixed_counts["tokens"] / fixed_counts["samples"]
            bound = per_sample * sum((samples + 1) / (r["correct"] + 1) if r["correct"] else samples for r in judged)
            print(
                f"\niteration {iteration}: {fixed_counts['items']:.0f} items, keep rate {fixed_counts['kept'] / fixed_counts['items']:.3f} (fixed N)\n{HEADER}"
            )
            for label, (counts, calls) in results[iteration].items():
                if iteration == 1 and not SCHEDULES[label][1]:
                    continue
                print(_row(label, counts, fixed_counts["tokens"], bound, calls))


if __name__ == "__main__":
    simulated()
    if "--simulated-only" not in sys.argv:
        real()
