"""Recipes side by side on the CPU testbed: held-out accuracy per iteration and generated judge
tokens, each recipe run on several seeds (mean and spread), every run a real `selftaught run`.

    python benchmarks/recipes.py                          # every recipe, seeds 0 1 2
    python benchmarks/recipes.py --recipes paper fixed-n --seeds 0 1
    python benchmarks/recipes.py --world hard --recipes paper dpo fixed-n --seeds 0 1 2
    python benchmarks/recipes.py --world hard --recipes grpo --seeds 0 --set train.grpo.learningRate=3e-4   # a sweep point
    python benchmarks/recipes.py --world hard-rated --recipes paper pointwise   # pairwise against pointwise

`--world easy` (the default) is examples/testbed.yaml, where every full-rate recipe reaches the
ceiling in one iteration (a quick check that learning works); `--world hard` is
examples/testbed-hard.yaml, whose seed also misjudges a third of the pairs, so recipes climb over
several iterations and can be told apart (docs/testbed.md); `--world hard-rated` is the hard world
with a seed that also rates one answer 1-10, for pointwise recipes.

The testbed (`selftaught dev testbed`, built here when missing) is arithmetic questions whose
chosen and rejected answers differ only in whether they answer the question asked; its seed
judges them at chance. Each recipe is a set of changes to the world's manifest; a seed changes
every random choice of the method and of training (`spec.seed`, `train.seed`), not the seed model.
Results accumulate in ROOT/results.json (ROOT: .selftaught/recipes, recipes-hard, recipes-hard-rated):
a run already there is not run again, and the table covers every run there; per iteration it
gives mean ± standard deviation over seeds, then the lift, the judge stages' generated tokens
and each run's wall time (mean). docs/testbed.md keeps the latest table and the commands that produced it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
#: world -> (its manifest, the folder `selftaught dev testbed --world` builds, the default ROOT)
WORLDS = {
    "easy": (REPO / "examples" / "testbed.yaml", REPO / ".selftaught" / "testbed", REPO / ".selftaught" / "recipes"),
    "hard": (REPO / "examples" / "testbed-hard.yaml", REPO / ".selftaught" / "testbed-hard", REPO / ".selftaught" / "recipes-hard"),
    # the hard world's seed, then also taught the rating format: pairwise against pointwise on one seed
    "hard-rated": (REPO / "examples" / "testbed-hard.yaml", REPO / ".selftaught" / "testbed-hard-rated", REPO / ".selftaught" / "recipes-hard-rated"),
}

#: recipe -> changes to the testbed's spec (nested, merged into it)
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},  # SFT from the seed on the latest kept judgments, adaptive sampling
    "fixed-n": {"judge": {"adaptive": False}},  # all N samples for every item
    "init-previous": {"train": {"initFrom": "previous"}},  # fine-tune the previous iteration's judge
    # a fifth of the learning rate and one pass: learning spread over the iterations
    "paper-gentle": {"train": {"learningRate": 2.0e-4, "epochs": 1}},
    "previous-gentle": {"train": {"initFrom": "previous", "learningRate": 2.0e-4, "epochs": 1}},
    # DPO on pairs of the judge's own right and wrong judgments (docs/methods.md), with the NLL term,
    # at the gentle rate (DPO's usual rates are far below SFT's)
    "dpo-gentle": {"train": {"method": "dpo", "dpo": {"nllWeight": 0.2}, "learningRate": 2.0e-4, "epochs": 1}},
    "dpo-previous-gentle": {"train": {"method": "dpo", "dpo": {"nllWeight": 0.2}, "initFrom": "previous", "learningRate": 2.0e-4, "epochs": 1}},
    # DPO at the testbed's own rate and epochs (what `paper` uses), with the NLL term
    "dpo": {"train": {"method": "dpo", "dpo": {"nllWeight": 0.2}}},
    # rate one answer 1-10 instead of choosing between two (needs a seed that speaks the rating format:
    # --world hard-rated); evaluated in rating mode, RewardBench's way for such a judge
    "pointwise": {"judge": {"format": "pointwise"}},
    # GRPO (docs/methods.md): online RL on the pairs, no judge stage, 100 steps of one pair's group of 8
    # an iteration (800 judgments, about what the judge stage samples), at the rate a sweep on the hard
    # world picked (docs/testbed.md: 1e-3 collapses to one verdict); and with J1's position-consistency
    # reward, which needs both orders of a pair in one batch
    "grpo": {"train": {"method": "grpo", "grpo": {"learningRate": 3.0e-4, "steps": 100}}},
    "grpo-consistency": {
        "train": {"method": "grpo", "grpo": {"learningRate": 3.0e-4, "steps": 100, "rewards": {"consistency": 0.5}}},
        "judge": {"orders": "both"},
    },
    # GRPO at its published defaults (TRL's 1e-6 rate for 7-70B models, one pass over the pairs)
    "grpo-published": {"train": {"method": "grpo"}},
    # LoRA (docs/methods.md): rank-16 adapters on every projection of the frozen seed at 10x the rate;
    # a fresh adapter on the seed each iteration (the paper's recipe), or the previous one trained on
    "lora": {"train": {"lora": {}}},
    "lora-previous": {"train": {"lora": {}, "initFrom": "previous"}},
    "dpo-lora": {"train": {"method": "dpo", "dpo": {"nllWeight": 0.2}, "lora": {}}},
}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def setting(assignment: str) -> dict[str, Any]:
    """`train.grpo.learningRate=3e-4` as nested changes to a spec (the value read as YAML)."""
    path, _, value = assignment.partition("=")
    if not path or not _:
        raise argparse.ArgumentTypeError(f"--set wants FIELD.PATH=VALUE, got {assignment!r}")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and re.fullmatch(r"[-+]?[0-9.]+e[-+]?[0-9]+", parsed):  # YAML 1.1 reads "3e-4" as a string
        parsed = float(parsed)
    change: dict[str, Any] = {path.split(".")[-1]: parsed}
    for key in reversed(path.split(".")[:-1]):
        change = {key: change}
    return change


def variant(recipe: str, settings: list[str]) -> str:
    """The name a recipe's runs are kept under: with `--set`, the settings after it."""
    return f"{recipe}[{','.join(settings)}]" if settings else recipe


def run_document(recipe: str, seed: int, root: Path, world: str = "easy", settings: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    document = yaml.safe_load(WORLDS[world][0].read_text())
    spec = merged(document["spec"], RECIPES[recipe])
    for assignment in settings:
        spec = merged(spec, setting(assignment))
    spec["seed"] = seed
    spec["train"]["seed"] = seed
    spec["storage"]["uri"] = str(root / "runs")
    for path in ("models.seed", "data.instructions", "data.evaluation"):  # the world's files, by their names in its folder
        head, tail = path.split(".")
        spec[head][tail]["source"] = str(WORLDS[world][1] / Path(spec[head][tail]["source"]).name)
    slug = "".join(f"-{path.rsplit('.', 1)[-1]}-{value}" for path, _, value in (assignment.partition("=") for assignment in settings))
    name = re.sub(r"[^a-z0-9-]+", "-", f"{recipe}{slug}-s{seed}".lower())  # a run's name is a DNS label
    return {**document, "metadata": {"name": name, "namespace": "recipes"}, "spec": spec}


def results(root: Path, name: str) -> dict[str, Any]:
    """Accuracy per iteration (0 = the seed) and the judgments generated to train the judge (the
    judge stages' tokens, or GRPO's rollouts), read from the run's manifests."""
    from selftaught.pipeline.scan import scan
    from selftaught.store import LocalStore

    progress = scan(LocalStore(root / "runs" / "recipes" / name))
    accuracy, tokens, fixed = {}, 0.0, 0.0
    for ref, manifest in progress.manifests.items():
        if ref.name == "evaluate":
            accuracy[ref.iteration] = manifest.summary.get("accuracy")
        elif ref.name == "judge":
            tokens += manifest.counts.get("tokens", 0)
            fixed += manifest.counts.get("fixed_n_tokens_estimate", 0)
        elif ref.name == "train":  # GRPO samples its judgments in the train stage: its rollouts
            tokens += manifest.counts.get("rollout_tokens", 0)
    return {"accuracy": [accuracy[i] for i in sorted(accuracy)], "judge_tokens": tokens, "fixed_n_tokens": fixed}


def refusal(recipe: str, world: str, settings: list[str] = ()) -> str | None:  # type: ignore[assignment]
    """Why the spec refuses the recipe (say, a field another version lacks), or None."""
    from selftaught.api.load import parse_run
    from selftaught.errors import InvalidSpec

    try:
        parse_run(run_document(recipe, 0, Path("/tmp"), world, settings), source=recipe)
    except InvalidSpec as error:
        return str(error)
    return None


def run(recipe: str, seed: int, root: Path, world: str = "easy", settings: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    document = run_document(recipe, seed, root, world, settings)
    name = document["metadata"]["name"]
    manifest = root / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(document, sort_keys=False))
    started = time.monotonic()
    with open(root / f"{name}.log", "w") as log:
        ended = subprocess.run([sys.executable, "-m", "selftaught", "run", str(manifest)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    outcome = {**results(root, name), "seconds": round(time.monotonic() - started, 1), "run": name}
    if ended.returncode:  # a recipe that fails on a seed is a result too: its error line, and the iterations before it
        errors = [line for line in (root / f"{name}.log").read_text().splitlines() if line.startswith("error:")]
        outcome["failed"] = errors[-1].removeprefix("error: ")[:300] if errors else f"selftaught run exited {ended.returncode}"
    return outcome


def save(saved: Path, key: str, outcome: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Add one run's outcome to results.json, re-read first (another invocation may be running
    other recipes into the same ROOT), written whole or not at all."""
    done = json.loads(saved.read_text()) if saved.is_file() else {}
    done[key] = outcome
    partial = saved.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(done, indent=1))
    partial.replace(saved)
    return done


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "-"
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def table(grid: dict[str, list[dict[str, Any]]]) -> str:
    iterations = max((len(r["accuracy"]) for runs in grid.values() for r in runs), default=0)
    head = ["recipe", "seeds", *(f"it{i}" for i in range(iterations)), "lift it0→last (min)", "judge tokens", "vs fixed N", "wall time"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for recipe, runs in grid.items():
        per_iteration = [[r["accuracy"][i] for r in runs if len(r["accuracy"]) > i] for i in range(iterations)]
        lifts = [r["accuracy"][-1] - r["accuracy"][0] for r in runs if len(r["accuracy"]) > 1 and "failed" not in r]
        tokens = [r["judge_tokens"] for r in runs]
        ratio = [r["judge_tokens"] / r["fixed_n_tokens"] for r in runs if r["fixed_n_tokens"]]
        seconds = [r["seconds"] for r in runs if "seconds" in r]
        cells = [
            recipe,
            str(len(runs)) + (f" ({failed} failed)" if (failed := sum("failed" in r for r in runs)) else ""),
            *(_mean_spread(values) for values in per_iteration),
            f"{_mean_spread(lifts)} ({min(lifts):+.3f})" if lifts else "-",
            f"{statistics.mean(tokens):,.0f}",
            f"{statistics.mean(ratio):.2f}×" if ratio else "-",
            f"{statistics.mean(seconds):.0f} s" if seconds else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--world", choices=sorted(WORLDS), default="easy", help="the testbed: easy (examples/testbed.yaml), hard (examples/testbed-hard.yaml) or hard-rated (hard, its seed also rating)")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE", type=lambda text: setting(text) and text,
        help="change a spec field of every recipe run (a sweep point: train.grpo.learningRate=3e-4); kept as RECIPE[FIELD=VALUE]",
    )
    parser.add_argument("--root", type=Path, help="where the runs, their logs and results.json go (default: .selftaught/recipes, recipes-hard or recipes-hard-rated)")
    args = parser.parse_args()
    _, folder, default_root = WORLDS[args.world]
    args.root = args.root or default_root
    args.root.mkdir(parents=True, exist_ok=True)
    if not (folder / "seed" / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "selftaught", "dev", "testbed", "--world", args.world, str(folder)], check=True)
    saved = args.root / "results.json"
    done: dict[str, dict[str, Any]] = json.loads(saved.read_text()) if saved.is_file() else {}  # "recipe seed" -> outcome
    for recipe in args.recipes:
        name = variant(recipe, args.settings)
        if why := refusal(recipe, args.world, args.settings):
            print(f"{name}: skipped, this code's spec refuses it: {why}", flush=True)
            continue
        for seed in args.seeds:
            if f"{name} {seed}" in done:
                continue
            outcome = run(recipe, seed, args.root, args.world, args.settings)
            done = save(saved, f"{name} {seed}", outcome)
            print(
                f"{name} seed {seed}: accuracy {outcome['accuracy']}, judge tokens {outcome['judge_tokens']:,.0f}, {outcome['seconds']:.0f}s"
                + (f", failed: {outcome['failed']}" if "failed" in outcome else ""),
                flush=True,
            )
    grid: dict[str, list[dict[str, Any]]] = {}
    for key, outcome in done.items():
        name, seed = key.rsplit(" ", 1)
        recipe, _, settings = name.partition("[")
        if recipe not in RECIPES:
            continue
        run_name = outcome.get("run") or run_document(recipe, int(seed), args.root, args.world, settings.rstrip("]").split(",") if settings else [])["metadata"]["name"]
        if (args.root / "runs" / "recipes" / run_name).is_dir():  # read again: what a run counts may have grown since
            outcome = {**outcome, **results(args.root, run_name)}
        grid.setdefault(name, []).append(outcome)
    print()
    print(table({name: grid[name] for name in sorted(grid, key=lambda name: (list(RECIPES).index(name.split("[")[0]), name))}))


if __name__ == "__main__":
    main()
