"""What every stage process knows: the run, its store, which stage and shard, and how to start
an engine for a model."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from selftaught.api.spec import ModelSource, SelfTaughtRun, SelfTaughtRunSpec, iteration_model
from selftaught.chat import ChatEngine
from selftaught.engines.checkpointing import NeverStop, Stop
from selftaught.stages.shard_progress import NoProgress, SampleMeter, ShardProgress
from selftaught.store import Store
from selftaught.store.layout import ATTEMPT_PREFIX, checkpoint_output, output_key
from selftaught.store.manifest import published_key

if TYPE_CHECKING:  # the pipeline core hands a stage its reference; stages never build one
    from selftaught.pipeline.table import StageRef

T = TypeVar("T")


def vllm_engine(ctx: StageContext, model: ModelSource) -> ChatEngine:
    """The production engine: the model resolved to a local folder, loaded into vLLM (a LoRA
    checkpoint: its base, with the adapter through vLLM's LoRA support)."""
    from selftaught.engines.generation import VllmEngine
    from selftaught.engines.models import resolve_checkpoint

    local = resolve_checkpoint(model, ctx.spec.storage)
    return VllmEngine(local.base, ctx.spec.generation, seed=ctx.spec.seed, on_samples=ctx.meter.finished, adapter=local.adapter)


@dataclass
class StageContext:
    run: SelfTaughtRun
    stage: StageRef
    store: Store
    num_shards: int = 1
    started: float = field(default_factory=time.monotonic)
    #: how a generation stage gets its engine (tests hand in a scripted one)
    make_engine: Callable[[StageContext, ModelSource], ChatEngine] = vllm_engine
    #: this process's attempt at the stage: everything it writes goes under this folder
    attempt: str = field(default_factory=lambda: f"{ATTEMPT_PREFIX}{uuid.uuid4().hex[:12]}")
    #: the progress of the shard at work (`stages/shard_progress.py`); outside a shard, nothing is written
    progress: ShardProgress = field(default_factory=NoProgress)
    #: a request to stop (SIGTERM) as the stage process's signal handler keeps it; a trainer saves on it
    stop: Stop = field(default_factory=NeverStop)

    def __post_init__(self) -> None:
        #: counts the samples the engine generates into `progress`
        self.meter = SampleMeter(lambda: self.progress)

    @property
    def spec(self) -> SelfTaughtRunSpec:
        return self.run.spec

    def model(self, iteration: int) -> ModelSource:
        """M(`iteration`): the seed, or the checkpoint train-`iteration` published in this run's store."""
        return iteration_model(self.spec.models.seed, iteration, lambda i: self.store.url(published_key(self.store, *checkpoint_output(i))))

    def engine_factory(self, model: ModelSource) -> ChatEngine:
        return self.make_engine(self, model)

    def output_key(self, name: str) -> str:
        """Where this attempt writes its output `name`; published only if the attempt wins."""
        return output_key(self.stage.prefix, self.attempt, name)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def in_shard(records: Iterator[T], shard: int, num_shards: int) -> Iterator[T]:
    """Round-robin sharding: no record count needed up front, shards stay balanced."""
    for index, record in enumerate(records):
        if index % num_shards == shard:
            yield record


class LazyEngine:
    """An engine that is loaded on first use (`chat`, or measuring prompts): a shard with nothing
    to generate, or a reduce-only pass, never pays for loading a model."""

    def __init__(self, factory: Callable[[], ChatEngine]):
        self._factory = factory

    @cached_property
    def _engine(self) -> ChatEngine:
        return self._factory()

    def chat(self, conversations, sampling, seeds=None):  # type: ignore[no-untyped-def]
        return self._engine.chat(conversations, sampling, seeds)

    @property
    def max_model_len(self) -> int:
        return self._engine.max_model_len

    def prompt_tokens(self, conversations):  # type: ignore[no-untyped-def]
        return self._engine.prompt_tokens(conversations)
