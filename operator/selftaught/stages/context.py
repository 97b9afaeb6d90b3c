"""What every stage process knows: the run, its store, which stage and which shard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from selftaught.api.spec import SelfTaughtRun
from selftaught.store import Store, open_store
from selftaught.store.layout import StageRef


def run_store(run: SelfTaughtRun) -> Store:
    """`<storage.uri>/<namespace>/<name>/`: runs never share a folder."""
    storage = run.spec.storage
    root = open_store(storage.uri, endpoint=storage.endpoint, region=storage.region)
    return root.child(f"{run.metadata.namespace}/{run.metadata.name}")


@dataclass
class StageContext:
    run: SelfTaughtRun
    stage: StageRef
    store: Store
    num_shards: int = 1
    started: float = field(default_factory=time.monotonic)

    @property
    def spec(self):
        return self.run.spec

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def in_shard(records: Iterator[dict[str, Any]], shard: int, num_shards: int) -> Iterator[dict[str, Any]]:
    """Round-robin sharding: no record count needed up front, shards stay balanced."""
    for index, record in enumerate(records):
        if index % num_shards == shard:
            yield record


@dataclass
class LazyGenerator:
    """Loads vLLM only when a shard actually needs it: a finalize-only pass never does."""

    factory: Any

    @cached_property
    def engine(self):
        return self.factory()
