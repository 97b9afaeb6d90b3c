"""Showing a running stage to a person: a progress bar (tqdm) on a terminal, one plain line per
update elsewhere (CI, a pod's log, a file), for `selftaught run` and `selftaught status --watch`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from selftaught.views.live import StageView, describe, duration


class StageDisplay:
    """One stage's progress as it changes. `line(view)` is called with each new view where there
    is no terminal; on a terminal a bar is drawn on `stream` and removed when the stage ends."""

    def __init__(self, label: str, line: Callable[[str], None], *, stream: IO[str] | None = None, bar: bool | None = None):
        self.label, self.line = label, line
        self.stream = stream or sys.stderr
        self.bar_wanted = _terminal(self.stream) if bar is None else bar
        self._bar: Any = None
        self._shown: tuple | None = None

    def update(self, view: StageView | None) -> None:
        if view is None:
            return
        key = (view.updated_at, view.done, view.total, view.shards_done)
        if key == self._shown:
            return
        self._shown = key
        if not self.bar_wanted:
            self.line(f"{self.label:<12} … {describe(view, now=time.time())}")
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=round(view.total) if view.total else None, desc=f"{self.label:<12}", unit=f" {view.unit}", file=self.stream, leave=False, dynamic_ncols=True,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{unit}{postfix}",
            )  # fmt: skip
        self._bar.total = round(view.total) if view.total else None
        self._bar.n = round(min(view.done, view.total) if view.total else view.done)
        parts = [f"{view.shards_done}/{view.shards} shards"] if view.shards > 1 else []
        if view.tokens_per_second:
            parts.append(f"{view.tokens_per_second:,.0f} tok/s")
        parts += [f"{name} {value:.2f}" for name, value in view.metrics.items()]
        if view.eta_seconds is not None and view.updated_at is not None:
            parts.append(f"ETA {duration(max(view.eta_seconds - (time.time() - view.updated_at), 0))}")
        self._bar.set_postfix_str(", ".join(parts), refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _terminal(stream: IO[str]) -> bool:
    """A terminal a bar can be drawn on (one that reports no width, as a bare pty, cannot)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False
