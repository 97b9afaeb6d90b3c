"""Measuring prompts against the model's context before generating.

vLLM refuses a prompt longer than its context with an error for the whole batch: one oversized
record (a 1 MB instruction) would fail a whole stage without saying which record, and be retried
to no avail. So a stage first measures every prompt a record goes into (the engine's token count
of the rendered prompt, plus the tokens the stage lets the model write after it) against the
engine's context. A user's record that does not fit is a bad record like a malformed line: under
`onBadRecord: skip` it is passed over and counted with its file:line; otherwise it stops the stage
with a permanent error naming its file:line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from selftaught.chat import ChatEngine, Messages
from selftaught.errors import InvalidInput
from selftaught.store.jsonl import SkipCounter

T = TypeVar("T")
#: a conversation, the most tokens the model may write after it, and the setting that says so
Prompt = tuple[Messages, int, str]


def overflows(engine: ChatEngine, prompts: Sequence[Prompt]) -> list[str | None]:
    """For each prompt, why it does not fit the engine's context, or None when it fits. An empty
    list asks nothing of the engine (so a lazy one is not loaded)."""
    if not prompts:
        return []
    limit = engine.max_model_len
    tokens = engine.prompt_tokens([messages for messages, _, _ in prompts])
    return [
        None
        if count + max_tokens <= limit
        else f"its prompt is {count} tokens, and with {setting} {max_tokens} it does not fit the model's context of {limit} tokens"
        for count, (_, max_tokens, setting) in zip(tokens, prompts, strict=True)
    ]


def fits(engine: ChatEngine, conversations: Sequence[Messages], max_tokens: int) -> list[bool]:
    """Whether each conversation leaves room for `max_tokens` in the engine's context (for prompts
    built from generated text, which are dropped and counted, never a user's bad record)."""
    return [problem is None for problem in overflows(engine, [(c, max_tokens, "") for c in conversations])]


def fitting(
    engine: ChatEngine,
    located: Sequence[tuple[str, T]],
    prompts: Callable[[T], Sequence[Prompt]],
    *,
    on_bad_record: str,
    policy_field: str,
    skipped: SkipCounter,
) -> list[T]:
    """The records (given with where they are) whose every prompt fits. One that does not is
    skipped and counted in `skipped` under `on_bad_record: skip`, else an InvalidInput naming it."""
    flat: list[Prompt] = []
    owners: list[int] = []
    for index, (_, item) in enumerate(located):
        for prompt in prompts(item):
            flat.append(prompt)
            owners.append(index)
    problems: dict[int, str] = {}
    for index, problem in zip(owners, overflows(engine, flat), strict=True):
        if problem is not None:
            problems.setdefault(index, problem)
    kept: list[T] = []
    for index, (where, item) in enumerate(located):
        if index not in problems:
            kept.append(item)
            continue
        reason = f"{where}: too long for the model: {problems[index]}"
        if on_bad_record != "skip":
            raise InvalidInput(f"{reason}; shorten or remove the record, or set {policy_field}: skip to pass over such records")
        skipped.add(reason)
    return kept
