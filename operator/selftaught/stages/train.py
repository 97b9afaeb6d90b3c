"""train (iteration i): SFT (or DPO, `train.method`) of the seed (or of M(i-1)) on the kept
judgments with DeepSpeed; the checkpoint M(i) goes to the store, then the manifest that marks it
usable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from selftaught.engines.models import resolve_model
from selftaught.stages.contract import TOKENS_PER_SECOND, Stage
from selftaught.stages.shard_progress import NoProgress, ShardProgress
from selftaught.store.jsonl import read_jsonl
from selftaught.store.layout import checkpoint_output, preference_output, progress_key, sft_output
from selftaught.store.manifest import Manifest, published_key


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _step(ctx, step: int, steps: int) -> None:
    if step == 0:
        ctx.progress.working()  # the model is loaded: the rate of steps counts from here
    ctx.progress.set(step, steps)


class Train(Stage):
    name = "train"

    def run(self, ctx):
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
        checkpoint = ctx.store.url(prefix)
        return Manifest(
            stage=self.name,
            counts=numbers,
            outputs={key: {} for key in keys},
            summary={
                "checkpoint": checkpoint,
                "examples": int(numbers["examples"]),
                "tooLong": int(numbers["too_long"]),  # dropped: longer than train.maxSeqLen
                "trainLoss": round(numbers["train_loss"], 4),
                TOKENS_PER_SECOND: round(numbers["tokens_per_second_per_gpu"], 1),  # prompt + judgment tokens trained
            },
        )
