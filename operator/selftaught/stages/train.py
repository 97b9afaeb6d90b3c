"""train (iteration i): SFT (or DPO, `train.method`) of the seed (or of M(i-1)) on the kept
judgments with DeepSpeed; the checkpoint M(i) goes to the store, then the manifest that marks it
usable. `train.method: grpo` needs no judge stage: it samples judgments of the training pairs from
M(i-1) as it trains it (TRL's GRPOTrainer) and rewards the correct ones (`method/rewards.py`).

With `train.lora` the checkpoint M(i) is a LoRA adapter of the seed that names it as its base
(`engines/adapters.py`): a fresh adapter on the seed each iteration (`initFrom: seed`), or M(i-1)'s
adapter trained on (`initFrom: previous`, and GRPO); the manifest's `adapterOf` says so.

Every attempt continues from the newest complete checkpoint of the stage's full training state in
the store and saves its own every `train.checkpointEvery` and when asked to stop (SIGTERM), under
`<attempt>/resume/` (`engines/checkpointing.py`); publishing removes them, the manifest names only
the final model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from selftaught.engines.checkpointing import Checkpointing, Saved
from selftaught.engines.models import resolve_checkpoint
from selftaught.stages.contract import TOKENS_PER_SECOND, Stage
from selftaught.stages.shard_progress import NoProgress, ShardProgress
from selftaught.store.jsonl import read_jsonl
from selftaught.store.layout import PAIRS_TRAIN, checkpoint_output, preference_output, progress_key, resume_folder, sft_output
from selftaught.store.manifest import Manifest, published_key
from selftaught.store.progress import SavedState


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _step(ctx, step: int, steps: int) -> None:
    if ctx.progress.record.working_since is None:
        ctx.progress.working()  # the model is loaded: the rate of steps counts from here
    ctx.progress.set(step, steps)


def _metrics(ctx, point: dict[str, float]) -> None:
    """The newest reward and accuracy on the training pairs, into the progress object."""
    ctx.progress.record.metrics = {"reward": round(point["reward"], 4), "accuracy": round(point.get("correct", 0.0), 4)}


def _point(point: dict[str, float]) -> dict[str, float]:
    """A point of the curve, for the manifest: the step, the reward, each term's mean."""
    return {key: (int(value) if key == "step" else round(value, 4)) for key, value in point.items()}


def _saved(ctx, saved: Saved, *, resumed: bool = False) -> None:
    """The newest checkpoint a restart continues from, into the progress object at once (the
    operator prices a disruption by it); `resumed`: this attempt continues from it, so its steps
    are done but no part of this attempt's rate."""
    ctx.progress.record.saved = SavedState(done=saved.step, at=saved.at, seconds=saved.seconds, bytes=saved.bytes)
    if resumed:
        ctx.progress.record.resumed = saved.step
    ctx.progress.set(saved.step)
    ctx.progress.flush()


def _fingerprint(ctx) -> str:
    """What a checkpoint must share with this attempt to be continued: the training settings (not
    when it checkpoints), the model trained from, the number of processes (DeepSpeed's shards)."""
    train = ctx.spec.train.model_dump(mode="json", by_alias=True, exclude={"checkpoint_every"})
    if train["lora"] is None:
        del train["lora"]  # a full fine-tuning checkpoint made before LoRA existed is still this one
    model = ctx.model(ctx.spec.train_base(ctx.stage.iteration)).model_dump(mode="json")
    what = {"train": train, "model": model, "world": int(os.environ.get("WORLD_SIZE", "1"))}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _work_folder(iteration: int) -> Path:
    """Scratch space that every training process of this node shares: DeepSpeed writes each
    rank's part of a checkpoint into one folder, which the node's first process uploads.
    torchrun's agent is every worker's parent, so a folder named for it is this launch's alone;
    a process on its own gets a fresh one."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        folder = Path(tempfile.gettempdir()) / f"selftaught-train-{iteration}-{os.getppid()}"
        folder.mkdir(exist_ok=True)
        return folder
    return Path(tempfile.mkdtemp(prefix=f"selftaught-train-{iteration}-"))


@dataclass
class _Attempt:
    model_path: Path
    adapter: Path | None  # with train.lora and initFrom previous (or GRPO): M(i-1)'s adapter, trained on
    work: Path  # the trainer's files: its checkpoints under `trainer/`, the final model in `checkpoint/`
    checkpoints: Checkpointing


@contextlib.contextmanager
def _attempt(ctx) -> Iterator[_Attempt]:
    """One training attempt: its model, scratch folder, progress object (rank 0 speaks for every
    worker: optimizer steps done and in all) and checkpoints."""
    iteration = ctx.stage.iteration
    start = resolve_checkpoint(ctx.model(ctx.spec.train_base(iteration)), ctx.spec.storage)
    work = _work_folder(iteration)
    if is_main_process():
        ctx.progress = ShardProgress(ctx.store, progress_key(ctx.stage.prefix, 0), ctx.stage.label, 0, ctx.attempt, unit="steps")
        ctx.progress.start()
    checkpoints = Checkpointing(
        ctx.store, ctx.stage.prefix, resume_folder(ctx.stage.prefix, ctx.attempt), fingerprint=_fingerprint(ctx),
        every=ctx.spec.train.checkpoint_seconds, stop=ctx.stop, on_saved=lambda saved: _saved(ctx, saved),
        on_resumed=lambda saved: _saved(ctx, saved, resumed=True),
    )  # fmt: skip
    try:
        yield _Attempt(start.base, start.adapter, work, checkpoints)
    finally:
        ctx.progress = NoProgress()
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # the node's folder: its first process removes it
            shutil.rmtree(work, ignore_errors=True)


def _adapter_summary(ctx) -> dict[str, str]:
    """With `train.lora`: the checkpoint is an adapter of the seed (the status and `selftaught
    status` show it beside the checkpoint)."""
    return {"adapterOf": ctx.spec.models.seed.source} if ctx.spec.train.lora is not None else {}


class Train(Stage):
    name = "train"

    def run(self, ctx):
        if ctx.spec.train.method == "grpo":
            return self._grpo(ctx)
        from selftaught.engines.training import train_dpo, train_sft

        iteration = ctx.stage.iteration
        dpo = ctx.spec.train.method == "dpo"
        trainer, data = (train_dpo, preference_output(iteration)) if dpo else (train_sft, sft_output(iteration))
        records = read_jsonl(ctx.store, published_key(ctx.store, *data))
        with _attempt(ctx) as attempt:
            output = attempt.work / "checkpoint"
            numbers = trainer(
                model_path=attempt.model_path, records=records, train=ctx.spec.train, output_dir=output, work_dir=attempt.work / "trainer",
                on_step=lambda step, steps: _step(ctx, step, steps), checkpoints=attempt.checkpoints, adapter=attempt.adapter,
                base=ctx.spec.models.seed,
            )  # fmt: skip
            ctx.progress.finish()
            if not is_main_process():
                return None  # rank 0 publishes the checkpoint and the manifest
            prefix = ctx.output_key(checkpoint_output(iteration)[1])  # this attempt's folder: published if it wins
            with ctx.stop.deferred():  # trained: a stop waits for the upload rather than redo steps
                keys = ctx.store.upload_dir(output, prefix)
        checkpoint = prefix  # store-relative: a copy of the store points at its own copy (readers resolve it)
        return Manifest(
            stage=self.name,
            counts=numbers,
            outputs=keys,  # each file's bytes and sha256: who fetches the checkpoint verifies it
            summary={
                "checkpoint": checkpoint,
                "examples": int(numbers["examples"]),
                "tooLong": int(numbers["too_long"]),  # dropped: longer than train.maxSeqLen
                "trainLoss": round(numbers["train_loss"], 4),
                TOKENS_PER_SECOND: round(numbers["tokens_per_second_per_gpu"], 1),  # prompt + judgment tokens trained
                **_adapter_summary(ctx),
                **attempt.checkpoints.summary(),
            },
        )

    def _grpo(self, ctx):
        """GRPO of M(i-1) on judgments it samples of the training pairs (the judge stage's prompts)."""
        from selftaught.engines.training import train_grpo
        from selftaught.method.rewards import TERMS, grpo_prompts, rewards, rows_per_pair

        spec, iteration = ctx.spec, ctx.stage.iteration
        grpo = spec.train.grpo
        pairs = read_jsonl(ctx.store, published_key(ctx.store, *PAIRS_TRAIN))
        rows = grpo_prompts(pairs, format=spec.judge.format, orders=spec.judge.orders, seed=spec.seed, iteration=iteration)

        def scorer(batch: list[dict], texts: list[str]) -> dict[str, list[float]]:
            return rewards([row["group"] for row in batch], [row["role"] for row in batch], texts)

        with _attempt(ctx) as attempt:
            output = attempt.work / "checkpoint"
            numbers = train_grpo(
                model_path=attempt.model_path, rows=rows, scorer=scorer, terms=TERMS,
                weights={name: getattr(grpo.rewards, name) for name in TERMS},
                rows_per_pair=rows_per_pair(spec.judge.format, spec.judge.orders),
                max_completion_tokens=grpo.max_completion_tokens or spec.judge.max_tokens,
                train=spec.train, output_dir=output, work_dir=attempt.work / "trainer", seed=spec.train.seed + iteration,
                on_step=lambda step, steps: _step(ctx, step, steps), on_metrics=lambda point: _metrics(ctx, point),
                checkpoints=attempt.checkpoints, adapter=attempt.adapter, base=spec.models.seed,
            )  # fmt: skip
            ctx.progress.finish()
            if not is_main_process():
                return None
            prefix = ctx.output_key(checkpoint_output(iteration)[1])
            with ctx.stop.deferred():
                keys = ctx.store.upload_dir(output, prefix)
        curve = [_point(point) for point in numbers.pop("curve")]
        reward, accuracy = numbers.pop("reward"), numbers.pop("accuracy")
        return Manifest(
            stage=self.name,
            counts={**numbers, "tokens": numbers["rollout_tokens"]},  # generated tokens, as a judge stage counts them
            outputs=keys,  # each file's bytes and sha256: who fetches the checkpoint verifies it
            summary={
                "checkpoint": prefix,
                "prompts": len(rows),
                "steps": int(numbers["steps"]),
                "rollouts": int(numbers["rollouts"]),
                "reward": round(reward, 4) if reward is not None else None,
                "trainAccuracy": round(accuracy, 4) if accuracy is not None else None,  # verdicts right, of the sampled ones
                "rolloutTokensPerSecondPerGpu": round(numbers["tokens_per_second_per_gpu"], 1),
                "curve": curve,
                **_adapter_summary(ctx),
                **attempt.checkpoints.summary(),
            },
        )
