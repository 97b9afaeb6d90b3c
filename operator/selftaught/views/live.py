"""Progress inside a running stage: its shards' progress objects (`store/progress.py`) summed into
one view — percent, work done and in all, tokens per second, time left.

`stage_view` is pure and relative to the newest object, never to the reader's clock, so the same
objects always give the same view (the operator writes a status only when it changes). A shard
with a marker is done whatever its object says; a shard not started yet is taken to be as big as
the started ones; the time left is the work left at the rate the running shards go together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selftaught.pipeline.scan import Progress
from selftaught.pipeline.table import StageRef
from selftaught.store import Store
from selftaught.store.layout import PROGRESS, SHARD_MARKERS
from selftaught.store.progress import ProgressRecord, read_progress


@dataclass(frozen=True)
class StageView:
    stage: str
    unit: str
    done: float
    total: float | None
    shards: int
    shards_done: int
    tokens_per_second: float | None
    eta_seconds: float | None
    updated_at: float | None  #: epoch seconds of the newest progress object
    #: what the newest progress object measured (a GRPO train stage: reward, accuracy on the training pairs)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return round(min(100.0, 100.0 * self.done / self.total), 1)


def stage_view(stage: str, records: list[ProgressRecord], shards: int, finished: set[int] | frozenset[int] = frozenset()) -> StageView:
    """One stage's view from its shards' progress records (pure)."""
    by_shard: dict[int, ProgressRecord] = {}
    for record in records:  # one per shard; should two attempts both have written, the newest
        if record.shard not in by_shard or record.updated_at > by_shard[record.shard].updated_at:
            by_shard[record.shard] = record
    totals = [r.total for r in by_shard.values() if r.total]
    typical = sum(totals) / len(totals) if totals else None
    done = rate = tokens_rate = 0.0
    sizes: list[float] = []
    running = 0
    for shard in range(shards):
        record = by_shard.get(shard)
        size = record.total if record is not None and record.total else typical
        if size is None:  # neither its own total nor another shard's to go by
            continue
        sizes.append(size)
        if shard in finished or (record is not None and record.finished):
            done += size
        elif record is not None:
            done += min(record.done, size)
            if record.seconds > 0:
                running += 1
                rate += record.rate
                tokens_rate += record.tokens / record.seconds
    unit = next(iter(by_shard.values())).unit if by_shard else "samples"
    total = sum(sizes) if len(sizes) == shards else None
    left = None if total is None else max(total - done, 0.0)
    eta = left / rate if left is not None and rate > 0 else (0.0 if left == 0 else None)
    return StageView(
        stage=stage,
        unit=unit,
        done=done,
        total=total,
        shards=shards,
        shards_done=len(set(finished) | {s for s, r in by_shard.items() if r.finished}),
        tokens_per_second=round(tokens_rate, 1) if running and tokens_rate else None,
        eta_seconds=round(eta) if eta is not None else None,
        updated_at=max((r.updated_at for r in by_shard.values()), default=None),
        metrics=max(by_shard.values(), key=lambda r: r.updated_at).metrics if by_shard else {},
    )


def read_view(store: Store, ref: StageRef, progress: Progress, shards: int) -> StageView | None:
    """The view of a stage from the store: one small read per shard that has written progress;
    None when none has."""
    records = [record for key in progress.progress_keys.get(ref, []) if (record := read_progress(store, key)) is not None]
    if not records:
        return None
    return stage_view(ref.label, records, shards if ref.sharded else 1, progress.finished_shards.get(ref, set()))


def watch_view(store: Store, ref: StageRef, shards: int) -> StageView | None:
    """The view of one stage, from two listings of its own folders (for a runner or a person
    watching one stage, without scanning the whole run)."""
    progress = Progress()
    progress.progress_keys[ref] = [k for k in store.list(f"{ref.prefix}/{PROGRESS}/") if k.endswith(".json")]
    progress.finished_shards[ref] = {
        int(name) for k in store.list(f"{ref.prefix}/{SHARD_MARKERS}/") if (name := k.rsplit("/", 1)[-1].removesuffix(".json")).isdigit()
    }
    return read_view(store, ref, progress, shards)


def duration(seconds: float | None) -> str:
    """`1h02m`, `4m05s`, `12s`; `-` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def describe(view: StageView, now: float | None = None) -> str:
    """One line: `42.0% (1,234/2,940 samples, 3/16 shards), 812 tok/s, ETA 4m05s`, the ETA as of the
    newest progress object; with `now`, an update older than two minutes says how old it is."""
    parts = []
    if view.percent is not None:
        parts.append(f"{view.percent:.1f}%")
    if view.total is None and not view.done:
        return "started"
    amount = f"{view.done:,.0f}/{view.total:,.0f} {view.unit}" if view.total else f"{view.done:,.0f} {view.unit}"
    if view.shards > 1:
        amount += f", {view.shards_done}/{view.shards} shards"
    parts.append(f"({amount})" if parts else amount)
    text = " ".join(parts)
    if view.tokens_per_second:
        text += f", {view.tokens_per_second:,.0f} tok/s"
    text += "".join(f", {name} {value:.2f}" for name, value in view.metrics.items())
    age = (now - view.updated_at) if now is not None and view.updated_at is not None else 0.0
    if view.eta_seconds is not None:
        text += f", ETA {duration(view.eta_seconds)}"
    if age > 120:
        text += f" (last update {duration(age)} ago)"
    return text
