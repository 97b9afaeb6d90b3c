"""Reading the user's data: instructions and evaluation pairs, from a local path, S3 or the
Hugging Face Hub, streamed. Every bad record is named by where it is."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from selftaught.api.benchmarks import need_all
from selftaught.api.spec import DataSource, EvaluationData, Storage
from selftaught.engines.hub import hub_failure
from selftaught.errors import EmptyDataset, InvalidInput
from selftaught.store import LocalStore, ObjectNotFound, Store, open_uri
from selftaught.store.jsonl import BadRecord, SkipCounter, dotted_get, numbered_jsonl

HF_PREFIX = "hf://datasets/"
#: how many reasons for skipped records a stage manifest keeps: enough to see what went wrong,
#: small whatever the number of shards
MANIFEST_REASONS = 10
T = TypeVar("T")


def text_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _jsonl_objects(uri: str, storage: Storage | None) -> Iterator[tuple[Store, str]]:
    """(store, key) for a file, or for every `.jsonl` under a folder / prefix, in name order."""
    if uri.startswith("s3://"):
        parent, _, name = uri.rstrip("/").rpartition("/")
        if name.endswith((".jsonl", ".json")):
            store = open_uri(parent, storage)
            if name not in store.list(name):  # a listing, not a HEAD: a missing bucket is named as one
                raise InvalidInput(f"{uri}: no such object")
            yield store, name
            return
        store = open_uri(uri, storage)
        keys = [k for k in store.list("") if k.endswith(".jsonl")]
        if not keys:
            raise InvalidInput(f"{uri}: no .jsonl objects under this prefix")
        for key in keys:
            yield store, key
        return
    path = Path(uri.removeprefix("file://")).expanduser()
    if path.is_file():
        yield LocalStore(path.parent), path.name
    elif path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        if not files:
            raise InvalidInput(f"{uri}: no .jsonl files in this folder")
        for file in files:
            yield LocalStore(file.parent), file.name
    else:
        raise InvalidInput(f"{uri}: no such file or folder")


def iter_records(
    source: str, storage: Storage | None, skip: SkipCounter | None, split: str = "train"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for every record of a JSONL source or a Hub dataset."""
    if source.startswith(HF_PREFIX):
        yield from _hub_records(source[len(HF_PREFIX) :], split)
        return
    try:
        for store, key in _jsonl_objects(source, storage):
            for number, record in numbered_jsonl(store, key, skip=skip):
                yield f"{store.url(key)}:{number}", record
    except BadRecord as error:
        raise InvalidInput(str(error)) from None
    except ObjectNotFound as error:
        raise InvalidInput(str(error)) from None


def _hub_records(dataset_id: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - the generate image has it
        raise InvalidInput("reading a Hugging Face dataset needs the `datasets` package") from None
    subject = f"hf://datasets/{dataset_id} (split {split!r})"
    try:
        rows = datasets.load_dataset(dataset_id, split=split, streaming=True)
        # streaming: a network error can also come while reading, not only at load time
        for index, row in enumerate(rows):
            yield f"hf://datasets/{dataset_id}[{index}]", row
    except InvalidInput:
        raise
    except Exception as error:  # datasets raises many kinds: not there (permanent) or unreachable
        raise hub_failure(subject, error, InvalidInput) from None


def iter_instructions(source: DataSource, storage: Storage | None, skipped: SkipCounter) -> Iterator[dict[str, Any]]:
    """{"id", "instruction"} per usable record. Under `onBadRecord: skip` bad records are counted
    in `skipped`; otherwise the first one stops the stage with an error naming where it is."""
    for _, record in located_instructions(source, storage, skipped):
        yield record


def located_instructions(
    source: DataSource, storage: Storage | None, skipped: SkipCounter
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, {"id", "instruction"}) per usable record: where it is (file:line) names it if a
    later check (its prompt is too long for the model) passes over it or fails on it."""
    skipping = skipped if source.on_bad_record == "skip" else None
    count = 0
    for where, record in iter_records(source.source, storage, skipping, source.split):
        try:
            text = dotted_get(record, source.field)
            if not isinstance(text, str) or not text.strip():
                raise KeyError(source.field)
            record_id = str(dotted_get(record, source.id_field)) if source.id_field else text_id(text)
        except KeyError as error:
            reason = f"{where}: record has no non-empty text field {error.args[0]!r}"
            if skipping is None:
                raise InvalidInput(reason) from None
            skipping.add(reason)
            continue
        yield where, {"id": record_id, "instruction": text.strip()}
        count += 1
        if source.limit is not None and count >= source.limit:
            return


def _text(record: dict[str, Any], field: str) -> str | None:
    value = record.get(field)
    return value if isinstance(value, str) and value.strip() else None


def _missing(record: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    return [field for field in fields if _text(record, field) is None]


def _rewardbench(record: dict[str, Any]) -> dict[str, Any] | str:
    """RewardBench: prompt, chosen, rejected, subset (default "default"), id."""
    missing = _missing(record, ("prompt", "chosen", "rejected"))
    if missing:
        return f"evaluation record is missing {', '.join(missing)}"
    return {
        "id": str(record.get("id", text_id(record["prompt"] + record["chosen"]))),
        "subset": str(record.get("subset") or "default"),
        "prompt": record["prompt"],
        "chosen": record["chosen"],
        "rejected": record["rejected"],
    }


def _rewardbench2(record: dict[str, Any]) -> dict[str, Any] | str:
    """RewardBench 2: prompt, chosen (list; the correct answers), rejected (list), num_correct,
    subset, id (`ref:N`/`tied:N` in the Ties subset)."""
    def answers(field: str) -> list[str] | None:
        value = record.get(field)
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            return None
        return value

    chosen, rejected = answers("chosen"), answers("rejected")
    problems = [name for name, value in (("prompt", _text(record, "prompt")), ("chosen", chosen), ("rejected", rejected)) if value is None]
    if problems or _text(record, "subset") is None:
        return f"RewardBench 2 record is missing {', '.join(problems + ([] if _text(record, 'subset') else ['subset']))}"
    num_correct = record.get("num_correct", len(chosen))  # type: ignore[arg-type]
    if not isinstance(num_correct, int) or not 1 <= num_correct <= len(chosen):  # type: ignore[arg-type]
        return f"RewardBench 2 record has num_correct {num_correct!r} for {len(chosen)} chosen answers"  # type: ignore[arg-type]
    return {
        "id": str(record.get("id", text_id(record["prompt"]))),
        "subset": record["subset"],
        "prompt": record["prompt"],
        "answers": [*chosen[:num_correct], *rejected],  # type: ignore[index, misc]
        "num_correct": num_correct,
    }


def _judgebench(record: dict[str, Any]) -> dict[str, Any] | str:
    """JudgeBench: pair_id, question, response_A, response_B, label ("A>B" or "B>A"), source."""
    missing = _missing(record, ("question", "response_A", "response_B", "source"))
    if missing:
        return f"JudgeBench record is missing {', '.join(missing)}"
    if record.get("label") not in ("A>B", "B>A"):
        return f"JudgeBench record has label {record.get('label')!r}, expected 'A>B' or 'B>A'"
    return {
        "id": str(record.get("pair_id", text_id(record["question"] + record["response_A"]))),
        "subset": record["source"],
        "prompt": record["question"],
        "a": record["response_A"],
        "b": record["response_B"],
        "winner": record["label"][0],
    }


#: per benchmark of the table (`api/benchmarks.py`), how one record of its data is read
READERS = {"rewardbench": _rewardbench, "rewardbench2": _rewardbench2, "judgebench": _judgebench}
need_all(READERS, "stages/sources.py's readers")


def iter_evaluation_examples(
    data: EvaluationData, benchmark: str, storage: Storage | None, skipped: SkipCounter
) -> Iterator[dict[str, Any]]:
    """The evaluation set, read in `benchmark`'s format; every bad record is named by where it is."""
    for _, example in located_evaluation_examples(data, benchmark, storage, skipped):
        yield example


def located_evaluation_examples(
    data: EvaluationData, benchmark: str, storage: Storage | None, skipped: SkipCounter
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, example) per usable record of the evaluation set."""
    if data.source is None:
        raise InvalidInput("data.evaluation.source is not set")
    read = READERS[benchmark]
    skipping = skipped if data.on_bad_record == "skip" else None
    for where, record in iter_records(data.source, storage, skipping, data.split):
        example = read(record)
        if isinstance(example, str):
            reason = f"{where}: {example}"
            if skipping is None:
                raise InvalidInput(reason)
            skipping.add(reason)
            continue
        yield where, example


def check_evaluation_source(data: EvaluationData, benchmark: str, storage: Storage | None) -> int:
    """Read the whole evaluation source once before any stage depends on it (categorize, the first
    stage, calls this): a missing file, a malformed line or a source with no usable example fails
    the run at its start, permanently, naming file:line, not after hours of generation. The number
    of usable examples; nothing when no source is given (the held-out pairs are checked by pairs)."""
    if data.source is None:
        return 0
    skipped = SkipCounter()
    try:
        usable = sum(1 for _ in iter_evaluation_examples(data, benchmark, storage, skipped))
    except InvalidInput as error:
        raise InvalidInput(f"data.evaluation.source: {error}") from None
    if not usable:
        raise nothing_usable(f"data.evaluation.source {data.source}", f"{benchmark} example", skipped)
    return usable


def nothing_usable(subject: str, what: str, skipped: SkipCounter) -> EmptyDataset:
    """The error for an input without one usable record (permanent: retrying reads the same data),
    saying whether it is empty or how many records were skipped, and why the first ones were."""
    if not skipped.skipped:
        return EmptyDataset(f"{subject} has no {what}: it holds no records")
    return EmptyDataset(
        f"{subject} has no usable {what}: all {skipped.skipped} records were skipped under onBadRecord: skip; "
        f"the first: {'; '.join(skipped.examples[:3])}"
    )


def merged(*counters: SkipCounter) -> SkipCounter:
    """One count of skipped records from several (the reader's, the context check's)."""
    return SkipCounter(sum(c.skipped for c in counters), [r for c in counters for r in c.examples][:5])


class Counted(Generic[T]):
    """An iterator that counts what passes through it. Every shard reads the whole input and keeps
    its own part, so each one knows whether the input as a whole had a usable record at all."""

    def __init__(self, items: Iterable[T]):
        self._items, self.count = iter(items), 0

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = next(self._items)
        self.count += 1
        return item
