"""Which checkpoint of a run serves as its judge, and the one document a server process reads.

The operator's server pod and `selftaught serve` on one machine run the same entry on the same
document (`SELFTAUGHT_SERVE`), as stages do with `SELFTAUGHT_RUN`. The document holds only what
the server needs (the checkpoint, the store's address, the vLLM settings): an edit of anything
else in the run (more iterations, another judge setting) leaves the server pod's template as it
was, so the operator has nothing to roll out and a healthy server keeps running.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from selftaught.api.load import format_validation_error
from selftaught.api.spec import Generation, Model, ModelSource, SelfTaughtRun, Storage, iteration_model
from selftaught.errors import InvalidInput, Reason

#: The environment variable that carries the server's document to `selftaught serve`.
SERVE_VARIABLE = "SELFTAUGHT_SERVE"
#: The port the server listens on (vLLM's default).
SERVE_PORT = 8000
#: every iteration's numbers when choosing, not the newest ten the status keeps
ALL_ITERATIONS = 1_000_000


class NothingToServe(InvalidInput):
    """The run has no checkpoint that can be served yet (or not the one asked for)."""

    reason = Reason.NOTHING_TO_SERVE


@dataclass(frozen=True)
class Choice:
    """The checkpoint to serve: its iteration (0: the seed), where it is, and its evaluation."""

    iteration: int
    model: ModelSource
    score: float | None = None


def _score(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def _evaluation(row: dict[str, Any]) -> float | None:
    return _score(row, "overall") if row.get("overall") is not None else _score(row, "accuracy")


def choose(summaries: list[dict[str, Any]], seed: ModelSource, iteration: int | None = None) -> Choice:
    """`iteration`'s checkpoint, or the trained iteration with the best evaluation: the benchmark's
    overall score where the evaluation has one, else accuracy (held-out pairs). Of equal scores the
    earliest wins, so a later iteration that only ties never replaces a running server.
    `summaries` are the run's `iteration_summaries` (every iteration, not the newest ten)."""
    rows = {row["iteration"]: row for row in summaries}

    def model(number: int) -> ModelSource:  # M(i), the checkpoint train-i reported
        return iteration_model(seed, number, lambda i: rows[i]["checkpoint"])

    if iteration == 0:
        return Choice(0, model(0), _evaluation(rows.get(0, {})))
    trained = [row for number, row in sorted(rows.items()) if number >= 1 and row.get("checkpoint")]
    if iteration is not None:
        row = next((r for r in trained if r["iteration"] == iteration), None)
        if row is None:
            raise NothingToServe(f"iteration {iteration} has no checkpoint yet (serve.iteration / --iteration)")
        return Choice(iteration, model(iteration), _evaluation(row))
    key = "overall" if any(row.get("overall") is not None for row in trained) else "accuracy"
    best: Choice | None = None
    for row in trained:
        score = _score(row, key)
        if score is not None and (best is None or best.score is None or score > best.score):
            best = Choice(row["iteration"], model(row["iteration"]), score)
    if best is None:
        raise NothingToServe("no trained iteration has been evaluated yet: nothing to choose from (set serve.iteration, or --iteration, to serve one anyway)")
    return best


class ServedIteration(Model):
    """Another iteration's checkpoint served beside the chosen one (a LoRA adapter of the same base)."""

    iteration: int
    model: ModelSource


class ServedModel(Model):
    """What a server process needs: which model, where its store is, how vLLM runs it. `beside`:
    other iterations' LoRA adapters served with it, each under `iteration_name` (`selftaught serve
    --iteration` given more than once); the operator serves one."""

    name: str
    iteration: int
    model: ModelSource
    storage: Storage | None = None
    generation: Generation = Generation()
    beside: list[ServedIteration] | None = None


def iteration_name(name: str, iteration: int) -> str:
    """What iteration `iteration` of run `name` answers to where a server holds several (LoRA):
    `<run>-iteration-<i>`; the seed, every adapter's base, is `<run>-iteration-0`."""
    return f"{name}-iteration-{iteration}"


#: the `generation` settings a server runs with: how vLLM holds and reads the model. The others
#: (shards, parallelism, batchSize) say how stages split their work; an edit of one of them
#: leaves the server as it is.
SERVED_SETTINGS = (
    "tensor_parallel", "max_model_len", "gpu_memory_utilization", "dtype", "enforce_eager", "enable_prefix_caching",
    "max_num_seqs", "max_num_batched_tokens", "enable_chunked_prefill",
)  # fmt: skip


def served_model(run: SelfTaughtRun, choice: Choice) -> ServedModel:
    """The model answers to the run's name: a client asks for `model=<run name>`."""
    generation = Generation(**{name: getattr(run.spec.generation, name) for name in SERVED_SETTINGS})
    return ServedModel(name=run.metadata.name, iteration=choice.iteration, model=choice.model, storage=run.spec.storage, generation=generation)


def serve_document(served: ServedModel) -> str:
    return json.dumps(served.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"), sort_keys=True)


def read_serve_document(environ: Mapping[str, str] | None = None) -> ServedModel:
    document = (os.environ if environ is None else environ).get(SERVE_VARIABLE)
    if not document:
        raise InvalidInput(f"nothing to serve: give a run file or a run's store URI (the server pod gets {SERVE_VARIABLE})")
    try:
        return ServedModel.model_validate(json.loads(document))
    except ValueError as error:
        detail = format_validation_error(error, "") if isinstance(error, ValidationError) else str(error)
        raise InvalidInput(f"{SERVE_VARIABLE}: {detail}") from None
