"""train (iteration i): SFT (or DPO, `train.method`) of the seed (or of M(i-1)) on the kept
judgments with DeepSpeed; the checkpoint M(i) goes to the store, then the manifest that marks it
usable. `train.method: grpo` needs no judge stage: it samples judgments of the training pairs from
M(i-1) as it trains it (TRL's GRPOTrainer) and rewards the correct ones (`method/rewards.py`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from selftaught.engines.models import resolve_model
from selftaught.stages.contract import TOKENS_PER_SECOND, Stage
from selftaught.stages.shard_progress import NoProgress, ShardProgress
from selftaught.store.jsonl import read_jsonl
from selftaught.store.layout import PAIRS_TRAIN, checkpoint_output, preference_output, progress_key, sft_output
from selftaught.store.manifest import Manifest, published_key


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _step(ctx, step: int, steps: int) -> None:
    if step == 0:
        ctx.progress.working()  # the model is loaded: the rate of steps counts from here
    ctx.progress.set(step, steps)


def _metrics(ctx, point: dict[str, float]) -> None:
    """The newest reward and accuracy on the training pairs, into the progress object."""
    ctx.progress.record.metrics = {"reward": round(point["reward"], 4), "accuracy": round(point.get("correct", 0.0), 4)}


def _point(point: dict[str, float]) -> dict[str, float]:
    """A point of the curve, for the manifest: the step, the reward, each term's mean."""
    return {key: (int(value) if key == "step" else round(value, 4)) for key, value in point.items()}


class Train(Stage):
    name = "train"

    def run(self, ctx):
        if ctx.spec.train.method == "grpo":
            return self._grpo(ctx)
        from selftaught.engines.training import train_dpo, train_sft

        iteration = ctx.stage.iteration
        model_path = resolve_model(ctx.model(ctx.spec.train_base(iteration)), ctx.spec.storage)
        dpo = ctx.spec.train.method == "dpo"
        trainer, data = (train_dpo, preference_output(iteration)) if dpo else (train_sft, sft_output(iteration))
        records = read_jsonl(ctx.store, published_key(ctx.store, *data))
        work = Path(tempfile.mkdtemp(prefix=f"selftaught-train-{iteration}-"))
        if is_main_process():  # rank 0 speaks for every worker: optimizer steps done and in all
            ctx.progress = ShardProgress(ctx.store, progress_key(ctx.stage.prefix, 0), ctx.stage.label, 0, ctx.attempt, unit="steps")
            ctx.progress.start()
        try:
            output = work / "checkpoint"
            numbers = trainer(
                model_path=model_path, records=records, train=ctx.spec.train, output_dir=output, work_dir=work / "trainer",
                on_step=lambda step, steps: _step(ctx, step, steps),
            )  # fmt: skip
            ctx.progress.finish()
            if not is_main_process():
                return None  # rank 0 publishes the checkpoint and the manifest
            prefix = ctx.output_key(checkpoint_output(iteration)[1])  # this attempt's folder: published if it wins
            keys = ctx.store.upload_dir(output, prefix)
        finally:
            ctx.progress = NoProgress()
            shutil.rmtree(work, ignore_errors=True)
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
            },
        )

    def _grpo(self, ctx):
        """GRPO of M(i-1) on judgments it samples of the training pairs (the judge stage's prompts)."""
        from selftaught.engines.training import train_grpo
        from selftaught.method.rewards import TERMS, grpo_prompts, rewards, rows_per_pair

        spec, iteration = ctx.spec, ctx.stage.iteration
        grpo = spec.train.grpo
        model_path = resolve_model(ctx.model(spec.train_base(iteration)), spec.storage)
        pairs = read_jsonl(ctx.store, published_key(ctx.store, *PAIRS_TRAIN))
        rows = grpo_prompts(pairs, format=spec.judge.format, orders=spec.judge.orders, seed=spec.seed, iteration=iteration)

        def scorer(batch: list[dict], texts: list[str]) -> dict[str, list[float]]:
            return rewards([row["group"] for row in batch], [row["role"] for row in batch], texts)

        work = Path(tempfile.mkdtemp(prefix=f"selftaught-train-{iteration}-"))
        if is_main_process():
            ctx.progress = ShardProgress(ctx.store, progress_key(ctx.stage.prefix, 0), ctx.stage.label, 0, ctx.attempt, unit="steps")
            ctx.progress.start()
        try:
            output = work / "checkpoint"
            numbers = train_grpo(
                model_path=model_path, rows=rows, scorer=scorer, terms=TERMS,
                weights={name: getattr(grpo.rewards, name) for name in TERMS},
                rows_per_pair=rows_per_pair(spec.judge.format, spec.judge.orders),
                max_completion_tokens=grpo.max_completion_tokens or spec.judge.max_tokens,
                train=spec.train, output_dir=output, work_dir=work / "trainer", seed=spec.train.seed + iteration,
                on_step=lambda step, steps: _step(ctx, step, steps), on_metrics=lambda point: _metrics(ctx, point),
            )  # fmt: skip
            ctx.progress.finish()
            if not is_main_process():
                return None
            prefix = ctx.output_key(checkpoint_output(iteration)[1])
            keys = ctx.store.upload_dir(output, prefix)
        finally:
            ctx.progress = NoProgress()
            shutil.rmtree(work, ignore_errors=True)
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
            },
        )
