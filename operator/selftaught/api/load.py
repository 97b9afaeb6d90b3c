"""Reading a `SelfTaughtRun` document, with errors that name the offending field."""

from __future__ import annotations

import copy
import difflib
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from selftaught.api import spec as spec_models
from selftaught.api.spec import API_GROUP, API_VERSION, KIND, SelfTaughtRun
from selftaught.errors import InvalidSpec

__all__ = ["format_validation_error", "load_run", "parse_run"]


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        if item["type"] == "extra_forbidden":  # as kubectl says it, with the field meant where one is close
            parts.append(f'unknown field "{prefix}{where}"' + _did_you_mean(error.title, item["loc"], prefix))
            continue
        parts.append(f"{prefix}{where}: {item['msg'].removeprefix('Value error, ')}")  # our validators' own sentences
    return "; ".join(parts)


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model an annotation holds (in an Optional, a list, a dict's values), and whether a dict
    key comes first in an error's location."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        return _model_of(args[1])[0], True
    for arg in args:
        found, keyed = _model_of(arg)
        if found is not None:
            return found, keyed
    return None, False


def _did_you_mean(title: str, loc: tuple[Any, ...], prefix: str) -> str:
    """` (did you mean "spec.judge.samples"?)` for an unknown field next to a known one."""
    model: type[BaseModel] | None = getattr(spec_models, title, None)
    skip = False
    for part in loc[:-1]:
        if skip or isinstance(part, int):
            skip = False
            continue
        if model is None:
            return ""
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        if part not in fields:
            return ""
        model, skip = _model_of(fields[part].annotation)
    if model is None:
        return ""
    known = [info.alias or name for name, info in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    parent = ".".join(str(p) for p in loc[:-1])
    return f' (did you mean "{prefix}{parent}{"." if parent else ""}{close[0]}"?)' if close else ""


def _wrong_kind(source: str, kinds: list[Any]) -> InvalidSpec:
    """Names what was found, so a ConfigMap or a Job applied by mistake is recognised at once."""
    found = ", ".join(dict.fromkeys("a document without kind" if k is None else f"kind {k!r}" for k in kinds))
    expected = f"expected kind {KIND} (apiVersion {API_GROUP}/{API_VERSION})"
    return InvalidSpec(f"{source}: found {found}; {expected}" if found else f"{source}: no document; {expected}")


def parse_run(document: Any, *, source: str = "manifest") -> SelfTaughtRun:
    if not isinstance(document, dict):
        raise InvalidSpec(f"{source}: expected a SelfTaughtRun mapping, got {type(document).__name__}")
    if "kind" in document and document["kind"] != KIND:
        raise _wrong_kind(source, [document["kind"]])
    try:
        return SelfTaughtRun.model_validate(document)
    except ValidationError as error:
        raise InvalidSpec(f"{source}: {format_validation_error(error)}") from None


def load_run(path: str | Path) -> SelfTaughtRun:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidSpec(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InvalidSpec(f"{path}: not UTF-8 text (byte {error.start}); save the file as UTF-8") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)  # the file's own name and line, not "<unicode string>"
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        raise InvalidSpec(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None
    runs = [d for d in documents if isinstance(d, dict) and d.get("kind") == KIND]
    if not runs:
        raise _wrong_kind(str(path), [d.get("kind") if isinstance(d, dict) else None for d in documents])
    if len(runs) != 1:
        raise InvalidSpec(f"{path}: expected exactly one {KIND} document, found {len(runs)}")
    return parse_run(relative_to(runs[0], path.resolve().parent), source=str(path))


def _local_path(value: Any, folder: Path, *, model: bool = False) -> Any:
    """`value` made absolute against `folder` when it is a relative local path. A model source is
    a path when it looks like one (`./`, `../`, `~`) or names something in `folder`; otherwise it
    is a Hub id (`meta-llama/Llama-3.1-8B-Instruct`), left alone like `s3://` and `hf://` URIs."""
    if not isinstance(value, str) or not value or "://" in value.removeprefix("file://") or value.startswith("s3:"):
        return value
    path = Path(value.removeprefix("file://")).expanduser()
    if path.is_absolute():
        return value
    if model and not value.startswith((".", "~", "file://")) and not (folder / path).exists():
        return value
    return os.path.normpath(folder / path)


def relative_to(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The run `document` with the local paths it names (the store, the data, local models) read
    against `folder`, the manifest's own folder, as kubectl and docker compose read theirs: a run
    file means the same run from whichever folder it is given."""
    spec = document.get("spec")
    if not isinstance(spec, dict):
        return document
    document = copy.deepcopy(document)
    spec = document["spec"]
    for section, fields in (("storage", ("uri",)), ("data", ("instructions", "evaluation")), ("models", ("seed", "generator"))):
        part = spec.get(section)
        if not isinstance(part, dict):
            continue
        for name in fields:
            if section == "storage":
                if name in part:
                    part[name] = _local_path(part[name], folder)
                continue
            entry = part.get(name)
            if isinstance(entry, dict) and "source" in entry:
                entry["source"] = _local_path(entry["source"], folder, model=section == "models")
    return document


def parse_api_object(document: dict[str, Any], *, source: str) -> tuple[SelfTaughtRun, list[str]]:
    """A run as the API server stored it, and the fields this version does not know (ignored).

    The API server has already validated the object against the installed CRD, which may be
    newer than this operator (a field added by an upgrade, a default filled in): refusing it
    would fail the run until the operator is upgraded. Local files stay strict (`load_run`)."""
    try:
        return parse_run(document, source=source), []
    except InvalidSpec:
        pass
    try:
        SelfTaughtRun.model_validate(document)
    except ValidationError as error:
        unknown = [item["loc"] for item in error.errors() if item["type"] == "extra_forbidden"]
        if not unknown or len(unknown) != len(error.errors()):
            raise InvalidSpec(f"{source}: {format_validation_error(error)}") from None
    pruned = copy.deepcopy(document)
    for path in unknown:
        parent = pruned
        for key in path[:-1]:
            parent = parent[key]
        parent.pop(path[-1], None)
    return parse_run(pruned, source=source), [".".join(str(p) for p in path) for path in unknown]
