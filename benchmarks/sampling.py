"""Adaptive vs fixed-N rejection sampling: generated tokens per kept example, on the same data.

Part 1 drives the real judge stage with a simulated judge whose per-item accuracy is drawn from a
Beta distribution (mean 0.3 ... 0.9): how much adaptive sampling saves depends on how often the
judge is right. Part 2 runs the real judge stage on the tiny model with vLLM, both ways, on the
same pairs. Ratio = adaptive / fixed; below 1 means adaptive generates fewer tokens per kept
example. (The kept set has the same distribution either way; see method/judging.py.)
"""

from __future__ import annotations

import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class SimulatedJudge:
    """Right with the item's own probability; every judgment is 40 tokens."""

    max_model_len = 1 << 20  # every prompt fits

    def prompt_tokens(self, conversations):
        return [sum(len(m["content"].split()) for m in messages) for messages in conversations]

    def __init__(self, mean: float, seed: int = 0):
        self.rng = random.Random(seed)
        self.mean = mean
        self.skill: dict[str, float] = {}

    def chat(self, conversations, sampling, seeds=None):
        results = []
        for messages in conversations:
            user = messages[-1]["content"]
            key = re.search(r"\[User Question\]\n(.*)\n", user).group(1)
            chosen_first = user.index("good answer") < user.index("bad answer")
            concentration = 2.0
            p = self.skill.setdefault(key, self.rng.betavariate(self.mean * concentration, (1 - self.mean) * concentration))
            from selftaught.method.judging import Sample

            samples = []
            for _ in range(sampling.n):
                right = self.rng.random() < p
                verdict = ("A" if chosen_first else "B") if right else ("B" if chosen_first else "A")
                samples.append(Sample(f"reasoning ... [[{verdict}]]", 40))
            results.append(samples)
        return results


def _judge(run, engine):
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.pipeline.table import StageRef
    from selftaught.stages.context import StageContext
    from selftaught.stages.judge import Judge
    from selftaught.store.jsonl import JsonlWriter

    ctx = StageContext(run=run, stage=StageRef("judge", 1), store=open_run_store(run))
    with JsonlWriter(ctx.store, "bench/shard.jsonl") as out:
        result = Judge().map_shard(ctx, 0, out, engine)  # any ChatEngine will do
    return result.counts


def simulated(pairs: int = 2000, samples: int = 15) -> None:
    from selftaught.api.load import parse_run
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.store.jsonl import write_jsonl
    from selftaught.store.layout import PAIRS_TRAIN, manifest_key
    from selftaught.store.manifest import Manifest, write_manifest

    print(f"simulated judge, {pairs} pairs x 2 orders, N={samples}, 40 tokens per judgment")
    print(f"{'mean acc':>8} {'kept fixed':>10} {'kept adapt':>10} {'tok/kept fixed':>14} {'tok/kept adapt':>14} {'ratio':>6}")
    for mean in (0.3, 0.5, 0.7, 0.9):
        row = {}
        for adaptive in (False, True):
            with tempfile.TemporaryDirectory() as folder:
                run = parse_run({
                    "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "bench"},
                    "spec": {"models": {"seed": {"source": "sim"}}, "data": {"instructions": {"source": "x"}},
                             "storage": {"uri": folder}, "judge": {"samples": samples, "adaptive": adaptive}},
                })  # fmt: skip
                store = open_run_store(run)  # the pairs stage's output, as the judge stage finds it
                write_jsonl(store, "/".join(PAIRS_TRAIN), ({"id": f"p{i}", "instruction": f"q{i}", "chosen": "good answer", "rejected": "bad answer"} for i in range(pairs)))
                write_manifest(store, manifest_key(PAIRS_TRAIN[0]), Manifest(stage="pairs"))
                row[adaptive] = _judge(run, SimulatedJudge(mean))
        fixed, adapt = row[False], row[True]
        per_fixed, per_adapt = fixed["tokens"] / fixed["kept"], adapt["tokens"] / adapt["kept"]
        print(f"{mean:>8.1f} {fixed['kept']:>10} {adapt['kept']:>10} {per_fixed:>14.1f} {per_adapt:>14.1f} {per_adapt / per_fixed:>6.3f}")


def real(samples: int = 8) -> None:
    """The judge stage with vLLM on the tiny model, same pairs, both ways."""
    from selftaught.api.load import parse_run
    from selftaught.dev.tiny_model import build_tiny_model, read_instructions
    from selftaught.pipeline.process import run_stage
    from selftaught.pipeline.runstore import open_run_store
    from selftaught.pipeline.table import StageRef

    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder) / "tiny", read_instructions(REPO / "examples/data/instructions.jsonl"), log=lambda _: None)

        def make(name, adaptive):
            return parse_run({
                "apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": name, "namespace": "bench"},
                "spec": {"models": {"seed": {"source": str(model)}},
                         "data": {"instructions": {"source": str(REPO / "examples/data/instructions.jsonl")}, "evaluation": {"heldOutFraction": 0}},
                         "storage": {"uri": folder}, "generation": {"enforceEager": True, "maxModelLen": 2048},
                         "categorize": {"maxTokens": 24}, "pairs": {"maxTokens": 96},
                         "judge": {"samples": samples, "adaptive": adaptive, "maxTokens": 24}},
            })  # fmt: skip

        fixed_run, adaptive_run = make("fixed", False), make("adaptive", True)
        for name in ("categorize", "select", "pairs"):
            run_stage(fixed_run, StageRef(name))
        shutil.copytree(Path(open_run_store(fixed_run).uri), Path(open_run_store(adaptive_run).uri), dirs_exist_ok=True)
        rows = {}
        for label, run in (("fixed", fixed_run), ("adaptive", adaptive_run)):
            counts = run_stage(run, StageRef("judge", 1)).counts
            rows[label] = counts
        print(f"\nreal judge stage (vLLM, tiny model), N={samples}")
        for label, counts in rows.items():
            print(f"{label:>8}: items {counts['items']:.0f}, kept {counts['kept']:.0f}, samples {counts['samples']:.0f}, tokens {counts['tokens']:.0f}, tokens/kept {counts['tokens'] / counts['kept']:.1f}")
        ratio = (rows["adaptive"]["tokens"] / rows["adaptive"]["kept"]) / (rows["fixed"]["tokens"] / rows["fixed"]["kept"])
        print(f"ratio adaptive/fixed tokens per kept example: {ratio:.3f}")


if __name__ == "__main__":
    simulated()
    if "--simulated-only" not in sys.argv:
        real()
