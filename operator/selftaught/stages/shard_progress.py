"""A stage's progress as it goes: one small object per shard in the store (`_progress/NNNNN.json`),
rewritten at most every few seconds and once at the end, never one write per item.

The unit is generated samples (a training stage: optimizer steps). A stage says its total when it
has read its shard; samples are counted as the engine finishes requests (vLLM reports each one)
or, for an engine that does not, when its call returns. The judge's total is its fixed-N budget
(items x judge.samples): an item that finds a correct judgment early counts its unused samples as
done, so the percentage only grows and reaches 100 when the shard ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from selftaught.chat import ChatEngine, Messages, Sample, Sampling
from selftaught.store import StorageUnavailable, Store
from selftaught.store.progress import ProgressRecord, SavedState, Unit, write_progress

log = logging.getLogger(__name__)
#: at most one write per shard this often (and one at the start and the end)
EVERY_SECONDS = 5.0


class ShardProgress:
    """The throttled writer of one shard's progress object."""

    def __init__(
        self,
        store: Store,
        key: str,
        stage: str,
        shard: int = 0,
        attempt: str | None = None,
        unit: Unit = "samples",
        every: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.store, self.key, self.every, self.clock, self.wall = store, key, every, clock, wall
        now = wall()
        self.record = ProgressRecord(stage=stage, shard=shard, attempt=attempt, unit=unit, started_at=now, updated_at=now)
        self._written: float | None = None
        self.writes = 0

    def start(self, total: float | None = None) -> None:
        """The shard started, or has read its input and knows its `total`: written at once."""
        self.record.total = total
        self._write()

    def working(self) -> None:
        """The model is loaded: work (and the rate of work) starts now."""
        self.record.working_since = self.wall()

    def advance(self, done: float = 1.0) -> None:
        self.record.done += done
        self._maybe_write()

    def resumed(self, done: float) -> None:
        """Work continued from, not done, by this attempt (replayed answers): done, and no part of the rate."""
        self.record.resumed += done
        self.advance(done)

    def set(self, done: float, total: float | None = None) -> None:
        """Absolute progress (a trainer's step and its steps)."""
        self.record.done = done
        if total is not None:
            self.record.total = total
        self._maybe_write()

    def saved(self, state: SavedState) -> None:
        """What a restart would not redo (`stages/shard_resume.py`): written at once, since it
        prices a disruption now."""
        self.record.saved = state
        self._write()

    def add_tokens(self, tokens: float) -> None:
        self.record.tokens += tokens
        self._maybe_write()

    def flush(self) -> None:
        """Written now, however recently it was (the state a restart continues from just changed)."""
        self._write()

    def finish(self) -> None:
        if self.record.total is not None:
            self.record.done = self.record.total
        self.record.finished = True
        self._write()

    def _maybe_write(self) -> None:
        if self._written is None or self.clock() - self._written >= self.every:
            self._write()

    def _write(self) -> None:
        self._written = self.clock()
        self.record.updated_at = self.wall()
        try:
            write_progress(self.store, self.key, self.record)
            self.writes += 1
        except StorageUnavailable as error:  # progress is a hint: the stage's own writes will say if the store is gone
            log.warning("progress not written: %s", error)


class NoProgress(ShardProgress):
    """Outside a shard (a stage called directly, a benchmark): counts nothing, writes nothing."""

    def __init__(self) -> None:
        self.record = ProgressRecord(stage="", started_at=0.0, updated_at=0.0)
        self.writes, self.wall = 0, time.time

    def _maybe_write(self) -> None:
        pass

    def _write(self) -> None:
        pass


class SampleMeter:
    """Counts generated samples into the current shard's progress: per finished request where the
    engine reports them (`finished`, vLLM's hook), else when its `chat` returns."""

    def __init__(self, progress: Callable[[], ShardProgress], clock: Callable[[], float] = time.monotonic):
        self.progress, self.clock = progress, clock
        self._live = 0
        #: generated tokens and seconds inside the engine's `chat` since `reset` (one shard's)
        self.tokens, self.seconds = 0, 0.0

    def reset(self) -> None:
        self.tokens, self.seconds = 0, 0.0

    def finished(self, samples: int) -> None:
        """The engine finished a request of `samples` samples."""
        self._live += samples
        self.progress().advance(samples)

    def counted(self, engine: ChatEngine) -> ChatEngine:
        return _Counted(engine, self)


class _Counted:
    """`engine`, with the samples and tokens of each call counted into the shard's progress."""

    def __init__(self, engine: ChatEngine, meter: SampleMeter):
        self.engine, self.meter = engine, meter

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[list[Sample]]:
        meter = self.meter
        meter._live = 0
        started = meter.clock()
        results = self.engine.chat(conversations, sampling, seeds)
        meter.seconds += meter.clock() - started
        progress = meter.progress()
        drawn = sum(len(samples) for samples in results)
        if drawn > meter._live:  # what the engine did not report request by request
            progress.advance(drawn - meter._live)
        tokens = sum(sample.tokens for samples in results for sample in samples)
        meter.tokens += tokens
        progress.add_tokens(tokens)
        meter._live = 0
        return results

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def prompt_tokens(self, conversations: Sequence[Messages]) -> list[int]:
        return self.engine.prompt_tokens(conversations)
