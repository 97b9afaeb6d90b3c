"""Creates the API server refused, per run and stage: said once, tried again after a back-off that
doubles with each refusal, as controller-runtime's rate-limited requeue does. A 403 (an admission
webhook such as Gatekeeper or Kyverno denied it, a `count/jobs` quota is used up) will not pass
the next second; trying every few seconds, with an event each time, only floods the run's
events. Kept in memory: a restarted operator tries once more at once, which is what a user
who fixed the policy wants anyway."""

from __future__ import annotations

import threading
from dataclasses import dataclass

#: the longest wait between two tries (controller-runtime's default limiter stops at 1000 s)
MAX_BACKOFF_SECONDS = 300.0
Key = tuple[str, str, str]  # namespace, run, stage label


@dataclass(frozen=True)
class Refusal:
    reason: str  # JobRefused (403), else JobCreateFailed
    message: str  # the API server's own sentence
    count: int  # refusals in a row
    due: float  # when to try again (the caller's clock)

    def status(self, label: str, now: float) -> str:
        """What the run's status says meanwhile."""
        return f"cannot create the {label} Job (refused {self.count}x; next try in {max(0, round(self.due - now))}s): {self.message}"


class Refusals:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Key, Refusal] = {}

    def refused(self, key: Key, reason: str, message: str, base: float, now: float) -> tuple[Refusal, bool]:
        """Record a refusal; with whether it is news (the first, or a new message: worth an event)."""
        with self._lock:
            before = self._held.get(key)
            count = before.count + 1 if before else 1
            wait = min(max(base, 1.0) * 2 ** (count - 1), MAX_BACKOFF_SECONDS)
            held = self._held[key] = Refusal(reason, message, count, now + wait)
            if len(self._held) > 10_000:  # bounded: runs long gone
                self._held = dict(list(self._held.items())[-5_000:])
        return held, before is None or before.message != message

    def holding(self, key: Key, now: float) -> Refusal | None:
        """The refusal that still holds the create back, or None when it may be tried."""
        with self._lock:
            held = self._held.get(key)
        return held if held is not None and now < held.due else None

    def clear(self, key: Key) -> None:
        """The create went through."""
        with self._lock:
            self._held.pop(key, None)
