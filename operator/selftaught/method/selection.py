"""Instruction selection: keep a balanced, challenging, de-duplicated subset, in one streaming pass.

Every instruction gets a seeded pseudo-random priority from its normalised text. A category keeps
its `per_category_cap` lowest priorities in a bounded heap, so memory is bounded by the caps, not
by the input, and the result does not depend on input order. Duplicates share a priority, which
makes de-duplication exact inside the heap and free outside it (an evicted text's twin would be
evicted too). Without caps, kept texts are de-duplicated with a set of 64-bit digests.
"""

from __future__ import annotations

import hashlib
import heapq
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from selftaught.api.spec import Select

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Case, accents, punctuation and spacing do not make an instruction new."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


def priority(seed: int, key: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Selector:
    """Feed categorized records with `offer`, then read the selection from `selected()`."""

    def __init__(self, spec: Select, seed: int):
        self.spec, self.seed = spec, seed
        self.categories = frozenset(spec.categories)
        self.counts: Counter[str] = Counter()
        self._heaps: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}  # max-heaps (negated)
        self._in_heap: dict[str, set[int]] = {}
        self._seen_digests: set[int] = set()
        self._uncapped: list[tuple[int, dict[str, Any]]] = []
        self._arrival = 0

    def offer(self, record: dict[str, Any]) -> None:
        self.counts["seen"] += 1
        category = record.get("category")
        if category is None:
            self.counts["uncategorized"] += 1
            return
        if category not in self.categories:
            self.counts["other_category"] += 1
            return
        if int(record.get("complexity") or 0) < self.spec.min_complexity:
            self.counts["too_simple"] += 1
            return
        key = normalise(record["instruction"]) if self.spec.deduplicate else record["id"]
        rank = priority(self.seed, key)
        cap = self.spec.per_category_cap or self.spec.total_cap
        if cap is None:
            self._keep_uncapped(rank, record)
            return
        heap = self._heaps.setdefault(category, [])
        members = self._in_heap.setdefault(category, set())
        if rank in members:
            self.counts["duplicates"] += 1
            return
        self._arrival += 1
        entry = (-rank, -self._arrival, record)
        if len(heap) < cap:
            heapq.heappush(heap, entry)
            members.add(rank)
        elif rank < -heap[0][0]:
            evicted = heapq.heapreplace(heap, entry)
            members.discard(-evicted[0])
            members.add(rank)
            self.counts["over_cap"] += 1
        else:
            self.counts["over_cap"] += 1

    def _keep_uncapped(self, rank: int, record: dict[str, Any]) -> None:
        if self.spec.deduplicate:
            if rank in self._seen_digests:
                self.counts["duplicates"] += 1
                return
            self._seen_digests.add(rank)
        self._uncapped.append((rank, record))

    def selected(self) -> Iterator[dict[str, Any]]:
        """The kept records, in priority order; with a total cap, categories take turns so the
        cap keeps the balance that per-category caps made."""
        if not self._heaps:  # no caps at all
            for _, record in sorted(self._uncapped, key=lambda item: item[0]):
                self._count_kept(record)
                yield record
            return
        queues = {c: sorted((-e[0], e[2]["id"], e[2]) for e in heap) for c, heap in self._heaps.items()}
        total = self.spec.total_cap
        taken = 0
        position = 0
        while any(position < len(q) for q in queues.values()):
            for category in sorted(queues):
                queue = queues[category]
                if position >= len(queue):
                    continue
                if total is not None and taken >= total:
                    self.counts["over_cap"] += 1
                    continue
                record = queue[position][2]
                self._count_kept(record)
                taken += 1
                yield record
            position += 1

    def _count_kept(self, record: dict[str, Any]) -> None:
        self.counts["kept"] += 1
        self.counts[f"kept.{record['category']}"] += 1


def select(records: Iterable[dict[str, Any]], spec: Select, seed: int) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Convenience for tests and small inputs."""
    selector = Selector(spec, seed)
    for record in records:
        selector.offer(record)
    return list(selector.selected()), selector.counts
