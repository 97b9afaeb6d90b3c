"""The engine protocol: what a stage asks of a text-generation engine, and what it gets back.

It sits at the bottom of the layers so that `engines/` (vLLM) and `method/` (the paper) both
speak it without importing each other; a test can hand a stage any object with this `chat`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: A chat conversation: [{"role": "system" | "user" | "assistant", "content": ...}, ...]
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512


@dataclass(frozen=True)
class Sample:
    """One generated completion, its length in tokens (what sampling cost), and whether it was
    cut off at `max_tokens` (vLLM's finish reason "length"): a cut-off text is never used."""

    text: str
    tokens: int
    truncated: bool = False


class ChatEngine(Protocol):
    def chat(
        self, conversations: Sequence[Messages], sampling: Sampling, seeds: Sequence[int] | None = None
    ) -> list[list[Sample]]:
        """`sampling.n` samples per conversation, in order. `seeds` (one per conversation) make
        each request reproducible on its own, so a resumed shard draws the same samples."""
        ...

    @property
    def max_model_len(self) -> int:
        """The context length: prompt and generated tokens together."""
        ...

    def prompt_tokens(self, conversations: Sequence[Messages]) -> list[int]:
        """Tokens of each conversation's prompt as the engine renders it (chat template and
        generation prompt included): a stage measures its prompts before generating, so an
        over-long record is a bad record with a file and line, not an engine error for the whole
        batch."""
        ...
