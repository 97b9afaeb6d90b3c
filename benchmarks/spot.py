"""Spot-safe stages, measured: kill a generation stage and a train stage at random points, with
SIGTERM (a pod deleted or drained, a spot notice, Ctrl-C) and with SIGKILL (a node lost), run the
same command again, and count the work the resumed attempt did again against the bound the run
promises (docs/spot.md).

    python benchmarks/spot.py                       # the quickstart's tiny model on CPU, both signals
    python benchmarks/spot.py --signals SIGKILL --seed 3

Each signal gets one run of `examples/local-quickstart.yaml` (one iteration, a fresh store) under
`selftaught run`. When the `pairs` stage (generation) and then `train-1` have done a random
fraction (--at) of their work, the benchmark waits for the stage's next progress write (so the
work done at the kill is known to within one engine call or one step) and sends the signal:
SIGTERM to `selftaught run`, which forwards it to the stage (the train stage saves its full
state at its next step end; a generation shard saves the answers it has), SIGKILL to the runner
and every process under it at once (nothing gets to save). Then the same `selftaught run` again,
which continues from what the store holds. Per kill it prints:

- done at kill: steps (training) or samples (generation) the killed attempt had done;
- saved: what the store held for the next attempt (a checkpoint's step; answers replayed);
- redone: done at kill - saved, the work done twice;
- bound: what the run promises: 0 on SIGTERM; on SIGKILL the work of `train.checkpointEvery`
  (steps at the killed attempt's own rate) or of `generation.saveEvery` plus one engine call
  (`generation.batchSize` requests, their samples);
- lost: seconds from the second start until the resumed attempt had done again what the killed
  one had (process start and model load included: what a disruption costs in wall time);
- and, once per run, the time and bytes of one train checkpoint and how long the steps waited.

`--checkpoint-every` and `--save-every` set those two fields (short here: the tiny model's stages
take seconds; the defaults are 10 minutes and 30 seconds). Results also go to ROOT/spot.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from selftaught.api.spec import duration_seconds  # noqa: E402
from selftaught.pipeline.table import StageRef  # noqa: E402
from selftaught.store import LocalStore  # noqa: E402
from selftaught.store.layout import progress_key  # noqa: E402
from selftaught.store.manifest import read_manifest  # noqa: E402
from selftaught.store.progress import read_progress  # noqa: E402

TARGETS = (StageRef("pairs"), StageRef("train", 1))


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (the stage trees run in process groups of their own)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def run_document(root: Path, name: str, checkpoint_every: str, save_every: str) -> Path:
    document = yaml.safe_load((REPO / "examples" / "local-quickstart.yaml").read_text())
    spec = document["spec"]
    spec["iterations"] = 1
    spec["storage"]["uri"] = str(root / "runs")
    spec["models"]["seed"]["source"] = str((REPO / "examples" / spec["models"]["seed"]["source"]).resolve())  # the manifest's paths are its folder's
    spec["data"]["instructions"]["source"] = str((REPO / "examples" / spec["data"]["instructions"]["source"]).resolve())
    spec["generation"].update(saveEvery=save_every, batchSize=16)  # engine calls of 16 requests: a kill loses one
    spec["train"].update(checkpointEvery=checkpoint_every, epochs=6)  # enough steps to kill in the middle
    spec["evaluate"]["baseline"] = False
    document["metadata"]["name"] = name
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Runner:
    """`selftaught run` in the background, with its log."""

    def __init__(self, manifest: Path, log: Path):
        self.log = log.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "selftaught", "run", str(manifest)], stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        self.started = time.monotonic()

    def kill(self, sig: signal.Signals) -> None:
        if sig == signal.SIGKILL:  # a lost node: every process at once, nothing saves
            for pid in [self.process.pid, *descendants(self.process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        else:
            self.process.send_signal(sig)
        self.process.wait(timeout=600)


def progress(store: LocalStore, ref: StageRef):
    return read_progress(store, progress_key(ref.prefix, 0))


def wait_for(predicate, timeout: float, what: str, runner: Runner):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()) is not None:
            return value
        if runner.process.poll() is not None:
            raise RuntimeError(f"selftaught run ended ({runner.process.returncode}) before {what}; see {runner.log.name}")
        time.sleep(0.05)
    raise TimeoutError(what)


def kill_at(store: LocalStore, ref: StageRef, runner: Runner, fraction: float, sig: signal.Signals) -> dict[str, Any]:
    """Wait until `ref` has done `fraction` of its work, then for its next progress write, then kill."""

    def far_enough():
        record = progress(store, ref)
        return record if record and record.total and not record.finished and record.done >= fraction * record.total else None

    seen = wait_for(far_enough, 900, f"{ref.label} reached {fraction:.0%}", runner)
    fresh = wait_for(lambda: (r := progress(store, ref)) and r.updated_at > seen.updated_at and r or None, 60, f"{ref.label}'s next progress write", runner)
    runner.kill(sig)
    saved = (progress(store, ref) or fresh).saved
    rate = (fresh.done - fresh.resumed) / fresh.seconds if fresh.seconds else None
    return {"stage": ref.label, "signal": sig.name, "unit": fresh.unit, "done": fresh.done, "total": fresh.total,
            "saved_before": saved.done if saved else 0.0, "rate": rate}  # fmt: skip


def regained(store: LocalStore, ref: StageRef, runner: Runner, done: float) -> float:
    """Seconds from the second start until `ref` has done `done` again (or finished)."""

    def there():
        manifest = read_manifest(store, ref.manifest_key)
        record = progress(store, ref)
        if manifest is not None or (record and record.done >= done and record.started_at >= time.time() - (time.monotonic() - runner.started)):
            return time.monotonic() - runner.started
        return None

    return wait_for(there, 900, f"{ref.label} regained its work", runner)


def resumed_work(store: LocalStore, ref: StageRef) -> float:
    manifest = read_manifest(store, ref.manifest_key)
    if manifest is None:
        return 0.0
    if ref.name == "train":
        return float(manifest.summary.get("resumedFromStep") or 0)
    return float(manifest.counts.get("resumed_samples", 0))


def bound(kill: dict[str, Any], sig: signal.Signals, checkpoint_every: str, save_every: str, samples_per_call: float) -> float:
    if sig != signal.SIGKILL:
        return 0.0
    if kill["unit"] == "steps":
        return (kill["rate"] or 0.0) * duration_seconds(checkpoint_every)
    return (kill["rate"] or 0.0) * duration_seconds(save_every) + samples_per_call


def one_run(root: Path, sig: signal.Signals, rng: random.Random, args: argparse.Namespace) -> list[dict[str, Any]]:
    name = f"spot-{sig.name.lower()}-{args.seed}"
    manifest = run_document(root, name, args.checkpoint_every, args.save_every)
    store = LocalStore(root / "runs" / "local" / name)
    log = root / f"{name}.log"
    kills = []
    runner = Runner(manifest, log)
    for ref in TARGETS:
        fraction = rng.uniform(*args.at)
        kill = kill_at(store, ref, runner, fraction, sig)
        runner = Runner(manifest, log)  # the same command again
        kill["lost_seconds"] = round(regained(store, ref, runner, kill["done"]), 1)
        wait_for(lambda key=ref.manifest_key: read_manifest(store, key), 1800, f"{ref.label} finished", runner)
        kill["saved"] = resumed_work(store, ref)
        kill["redone"] = max(kill["done"] - kill["saved"], 0.0)
        samples_per_call = 16 * (2 if ref.name == "pairs" else 1)  # batchSize requests; pairs asks twice per item
        kill["bound"] = round(bound(kill, sig, args.checkpoint_every, args.save_every, samples_per_call), 1)
        kill["at"] = round(fraction, 2)
        kills.append(kill)
        print(f"{name}: {ref.label} killed at {kill['done']:.0f}/{kill['total']:.0f} {kill['unit']}: redone {kill['redone']:.0f} "
              f"(bound {kill['bound']:.0f}), lost {kill['lost_seconds']}s", flush=True)  # fmt: skip
    runner.process.wait(timeout=1800)
    train = read_manifest(store, StageRef("train", 1).manifest_key)
    if train is not None:
        kills[-1]["checkpoint"] = {key: train.summary.get(key) for key in ("checkpoints", "checkpointSeconds", "checkpointStallSeconds", "checkpointBytes")}
    return kills


def table(kills: list[dict[str, Any]]) -> str:
    head = ["stage", "signal", "killed at", "done at kill", "saved", "redone", "bound", "lost (wall)"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for k in kills:
        within = "✓" if k["redone"] <= k["bound"] + 1e-9 else "✗"
        lines.append(
            f"| {k['stage']} | {k['signal']} | {k['at']:.0%} | {k['done']:.0f} {k['unit']} | {k['saved']:.0f} | {k['redone']:.0f} {within} | "
            f"{k['bound']:.0f} | {k['lost_seconds']:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", nargs="+", choices=["SIGTERM", "SIGKILL"], default=["SIGTERM", "SIGKILL"])
    parser.add_argument("--seed", type=int, default=0, help="picks the kill points")
    parser.add_argument("--at", nargs=2, type=float, default=(0.3, 0.7), help="kill between these fractions of a stage's work")
    parser.add_argument("--checkpoint-every", default="3s", help="train.checkpointEvery for the run")
    parser.add_argument("--save-every", default="1s", help="generation.saveEvery for the run")
    parser.add_argument("--root", type=Path, default=REPO / ".selftaught" / "spot")
    args = parser.parse_args()
    if not (REPO / ".selftaught" / "models" / "tiny-judge" / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "selftaught", "dev", "tiny-model", str(REPO / ".selftaught" / "models" / "tiny-judge")], check=True, cwd=REPO)
    args.root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    kills = []
    for name in args.signals:
        kills += one_run(args.root, signal.Signals[name], rng, args)
    (args.root / "spot.json").write_text(json.dumps(kills, indent=1))
    print()
    print(table(kills))
    for k in kills:
        if "checkpoint" in k:
            c = k["checkpoint"]
            print(f"\none train checkpoint ({k['signal']} run): {c['checkpoints']} written, {c['checkpointSeconds']} s each to save, "
                  f"{c['checkpointBytes']} bytes, the steps waited {c['checkpointStallSeconds']} s")  # fmt: skip


if __name__ == "__main__":
    main()
