"""What reuse saves a recipe sweep: the GPU-hours of three recipes of the paper replication
(`manifests/examples/paper-replication.yaml`) planned one after another, without reuse and with
`spec.reuse` (each run links every stage an earlier run of the sweep published with the same key).

    python benchmarks/reuse_sweep.py

The arithmetic is `selftaught plan`'s (views/estimate.py, as the operator prices a run on a
cluster); the keys are pipeline/lineage.py's. The sweep shares data and models, so their
identities are taken as the same names here (no store or Hub is read). The recipes differ in
training only, as a sweep over training knobs does: the paper's SFT, SFT at 3x its learning rate,
and DPO on a correct and a wrong judgment per item (which changes what the judge stages keep).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from selftaught.api.load import parse_run
from selftaught.pipeline.lineage import Identities, stage_keys
from selftaught.views.estimate import estimate, with_reuse
from selftaught.views.plan_text import gpu_hours, plan_inputs

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "manifests" / "examples" / "paper-replication.yaml"
SAME_DATA_AND_MODELS = Identities(instructions="WildChat-1M", evaluation="rewardbench", seed="Llama-3-70B-Instruct", generator="Mixtral-8x22B")

RECIPES: dict[str, dict[str, Any]] = {
    "paper (SFT, lr 1e-6)": {},
    "SFT, lr 3e-6": {"train": {"learningRate": 3e-6}},
    "DPO": {"train": {"method": "dpo"}},
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def main() -> None:
    document = yaml.safe_load(MANIFEST.read_text())
    published: set[str] = set()
    without = with_ = 0.0
    print(f"{'recipe':<22} {'GPU-h alone':>12} {'GPU-h with reuse':>17}  stages reused")
    for name, change in RECIPES.items():
        run = parse_run(_merge(document, {"spec": change}))
        cost = estimate(run.spec, plan_inputs(run))
        keys = stage_keys(run.spec, SAME_DATA_AND_MODELS)
        reused = [ref.label for ref, key in keys.items() if key in published]
        reusing = with_reuse(cost, reused)
        published |= set(keys.values())
        without += cost.gpu_hours
        with_ += reusing.gpu_hours
        print(f"{name:<22} {gpu_hours(cost.gpu_hours):>12} {gpu_hours(reusing.gpu_hours):>17}  {', '.join(reused) or '-'}")
    print(f"{'sweep of 3':<22} {gpu_hours(without):>12} {gpu_hours(with_):>17}  saves {gpu_hours(without - with_)} GPU-hours ({1 - with_ / without:.0%}); {without / with_:.2f}x")


if __name__ == "__main__":
    main()
