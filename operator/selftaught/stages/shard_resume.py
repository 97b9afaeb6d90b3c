"""A generation shard that dies (SIGKILL, eviction, a spot reclaim) resumes where it was: what the
engine answers is saved to the store as the shard goes, and the shard's next attempt replays the
saved answers instead of generating them again.

The unit saved is the engine request, not the stage's record. A stage's records are a function of
its input and of what the engine answered, and every sampled request carries a seed of its own
(categorize and pairs: per instruction; judge: per item and round; evaluate's votes: per sample;
greedy requests need none), so an attempt that runs the stage's own code over the same input, taking
the saved answers from the store and only the others from the engine, writes byte for byte what an
uninterrupted shard writes, in the same order. That holds for the judge too, whose fitted schedule
sizes each item's next round from every item of the shard so far: skipping the items it settled
would change the other items' rounds; replaying their answers does not.

A request is known by a hash of what decides its answer (the model and the generation settings
that change numbers, the conversation, the sampling, the seed) and by how many identical requests
the shard asked before it, so an unseeded request asked twice is answered twice. A changed model or
prompt therefore finds nothing to replay; the settings that only say how fast (those an edit may
change at any time: `batchSize`, `gpuMemoryUtilization`, `enforceEager`, ...; and `shards`) may
change between attempts.

Saving. Answers wait in memory and are written as one part (`<stage>/_saved/<shard>/<attempt>/
part-NNNNN.jsonl`, atomically: S3 has no append) once `FLUSH_REQUESTS` wait or
`generation.saveEvery` (default `FLUSH_SECONDS`) has passed since the last part, whichever comes
first, looked at as each engine call returns.
Engine calls are at most `generation.batchSize` requests, as vLLM gets them anyway, so a kill
loses the call in flight and at most one flush interval; a shard stopped by an exception (SIGTERM
turned into `Disrupted`, an engine crash) writes what waits first. A part that cannot be read
whole, or a line of it that is not an answer, is only answers missing: they are generated again.
The parts go when the shard's marker exists (and, for any left behind, when the stage publishes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from selftaught.api.changes import ANY_TIME, DEPENDS
from selftaught.api.spec import Generation, ModelSource
from selftaught.chat import ChatEngine, Messages, Sample, Sampling
from selftaught.stages.shard_progress import ShardProgress
from selftaught.store import ObjectNotFound, Store
from selftaught.store.layout import saved_folder, saved_part_key
from selftaught.store.progress import SavedState

log = logging.getLogger(__name__)
#: a part is written once this many finished requests wait: it bounds what a kill loses when
#: requests finish fast, and a part's size (~1000 judgments are a few MB)
FLUSH_REQUESTS = 1000
#: ... or once this many seconds have passed since the last part (`generation.saveEvery`'s default): two writes a minute cost nothing
#: (a PUT of a few MB is ~0.1 s of a minute's generation, well under 1%), and 30 s is well inside
#: a spot notice (2 min on AWS) and the model load any restart pays anyway
FLUSH_SECONDS = 30.0
#: what a shard's marker (and its stage's manifest) counts of the answers it replayed
RESUMED = ("resumed_samples", "resumed_tokens")
#: generation settings that say how fast, not what (those `api/changes.py` lets change at any
#: time), and `shards` (a request is known by its content, whichever shard asks it): answers saved
#: under other values still count
HOW_FAST = frozenset(
    {name for name, field in Generation.model_fields.items() if DEPENDS.get(f"generation.{field.alias}") == ANY_TIME} | {"shards"}
)


def fingerprint(model: ModelSource, generation: Generation) -> str:
    """What, besides the request itself, decides an answer: the model and the settings that change
    its numbers (dtype, context, tensor parallelism...)."""
    what = {"model": model.model_dump(mode="json"), "generation": generation.model_dump(mode="json", exclude=set(HOW_FAST))}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


class SavedRequests:
    """One shard's saved answers: those of its earlier attempts (read once, by `load`), and this
    attempt's, written as parts. Tells the shard's progress what a restart would not redo
    (`SavedState`), in the progress's own unit, so that its `done` less the saved `done` is the
    work a disruption now would cost: the progress when the last part was written (every answer
    it came from was saved then), less the engine call then running, plus the earlier attempts'
    answers not replayed yet."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        shard: int,
        attempt: str,
        progress: ShardProgress,
        every_requests: int | None = None,
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store, self.prefix, self.shard, self.attempt, self.progress, self.clock = store, prefix, shard, attempt, progress, clock
        self.every_requests = FLUSH_REQUESTS if every_requests is None else every_requests
        self.every_seconds = FLUSH_SECONDS if every_seconds is None else every_seconds
        self._earlier: dict[str, list[Sample]] = {}
        self._waiting: list[tuple[str, list[Sample]]] = []
        self._last = clock()
        self._unreplayed = 0  # samples of earlier attempts' answers not asked for yet
        self._call_from: float | None = None  # the progress when the engine call now running began
        self.parts = 0  #: parts this attempt wrote
        self.bytes = 0  #: what the shard's saved parts weigh, earlier attempts' and this one's
        self.resumed_samples = self.resumed_tokens = 0  #: what was replayed, not generated again
        self.unreadable = 0  #: saved lines that were not an answer (taken as missing)

    def load(self) -> None:
        """Read every part any attempt of this shard saved."""
        for key in self.store.list(f"{saved_folder(self.prefix, self.shard)}/"):
            if not key.endswith(".jsonl"):
                continue
            try:
                for line in self.store.iter_lines(key):
                    self.bytes += len(line)
                    self._read_line(line)
            except ObjectNotFound:  # removed meanwhile: the shard was finished by another attempt
                continue
        if self.unreadable:
            log.warning("shard %d: %d saved answers could not be read and are generated again", self.shard, self.unreadable)
        if self._earlier:
            self._unreplayed = sum(len(samples) for samples in self._earlier.values())
            self._tell_progress(seconds=0.0)
            log.info("shard %d resumes: %d requests (%d samples) were saved by earlier attempts", self.shard, len(self._earlier), self._unreplayed)

    def _read_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line)
            samples = [Sample(str(text), int(tokens), bool(truncated)) for text, tokens, truncated in record["samples"]]
            self._earlier.setdefault(str(record["request"]), samples)
        except (ValueError, TypeError, KeyError):  # a torn or foreign line: those answers are missing
            self.unreadable += 1

    def take(self, key: str) -> list[Sample] | None:
        """The saved answer to request `key`, if an earlier attempt saved it (once)."""
        samples = self._earlier.pop(key, None)
        if samples is not None:
            self._unreplayed -= len(samples)
            self.resumed_samples += len(samples)
            self.resumed_tokens += sum(sample.tokens for sample in samples)
        return samples

    def add(self, key: str, samples: list[Sample]) -> None:
        self._waiting.append((key, samples))

    def calling(self) -> None:
        """An engine call begins: what it finishes before it returns is not saved, if it never does."""
        self._call_from = self.progress.record.done

    def called(self) -> None:
        self._call_from = None

    def maybe_flush(self) -> None:
        if self._waiting and (len(self._waiting) >= self.every_requests or self.clock() - self._last >= self.every_seconds):
            self.flush()

    def flush(self) -> None:
        """Write what waits as this attempt's next part, and say so in the shard's progress."""
        if not self._waiting:
            return
        started = self.clock()
        data = b"".join(_line(key, samples) for key, samples in self._waiting)
        self.store.write_bytes(saved_part_key(self.prefix, self.shard, self.attempt, self.parts), data)
        self.parts += 1
        self.bytes += len(data)
        self._waiting.clear()
        self._last = self.clock()
        self._tell_progress(seconds=round(self._last - started, 3))

    def _tell_progress(self, seconds: float) -> None:
        done = self.progress.record.done if self._call_from is None else self._call_from
        self.progress.saved(SavedState(done=done + self._unreplayed, at=self.progress.wall(), seconds=seconds, bytes=self.bytes))

    def flush_quietly(self) -> None:
        """`flush` on the way out of a failing shard: its own failure never hides the shard's."""
        try:
            self.flush()
        except Exception as error:  # the store may be what failed
            log.warning("shard %d: answers not saved on the way out: %s", self.shard, error)

    def discard(self) -> None:
        """The shard is done: every attempt's parts of it go."""
        self.store.delete_prefix(f"{saved_folder(self.prefix, self.shard)}/")

    def counts(self) -> dict[str, float]:
        """What the shard's marker says it did not generate again (nothing for a fresh shard)."""
        return dict(zip(RESUMED, (self.resumed_samples, self.resumed_tokens), strict=True)) if self.resumed_samples else {}


def _line(key: str, samples: list[Sample]) -> bytes:
    record = {"request": key, "samples": [[s.text, s.tokens, s.truncated] for s in samples]}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class ResumingEngine:
    """`engine`, answering from `saved` what an earlier attempt of the shard already generated and
    saving what it generates, in calls of at most `batch` requests."""

    def __init__(self, engine: ChatEngine, saved: SavedRequests, fingerprint: Callable[[], str], batch: int):
        self.engine, self.saved, self.batch = engine, saved, batch
        self._fingerprint = fingerprint
        self._base: Any = None
        self._asked: Counter[str] = Counter()

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[list[Sample]]:
        keys = [self._key(c, sampling, None if seeds is None else seeds[i]) for i, c in enumerate(conversations)]
        answers: list[list[Sample] | None] = [self.saved.take(key) for key in keys]
        replayed = sum(len(samples) for samples in answers if samples is not None)
        if replayed:  # done work: the shard's percentage counts it as done
            self.saved.progress.resumed(replayed)
        missing = [i for i, samples in enumerate(answers) if samples is None]
        for start in range(0, len(missing), self.batch):
            part = missing[start : start + self.batch]
            self.saved.calling()
            drawn = self.engine.chat([conversations[i] for i in part], sampling, None if seeds is None else [seeds[i] for i in part])
            self.saved.called()
            for i, samples in zip(part, drawn, strict=True):
                answers[i] = samples
                self.saved.add(keys[i], samples)
            self.saved.maybe_flush()
        return answers  # type: ignore[return-value]  # every one answered by now

    def _key(self, conversation: Messages, sampling: Sampling, seed: int | None) -> str:
        if self._base is None:
            self._base = hashlib.sha256(self._fingerprint().encode())
        digest = self._base.copy()
        digest.update(json.dumps([conversation, asdict(sampling), seed], ensure_ascii=False, sort_keys=True).encode())
        key = digest.hexdigest()[:32]
        self._asked[key] += 1
        return f"{key}/{self._asked[key] - 1}"

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def prompt_tokens(self, conversations: Sequence[Messages]) -> list[int]:
        return self.engine.prompt_tokens(conversations)
