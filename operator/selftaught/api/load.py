"""Reading a `SelfTaughtRun` document, with errors that name the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from selftaught.api.spec import SelfTaughtRun
from selftaught.errors import InvalidSpec as SpecError

__all__ = ["SpecError", "format_validation_error", "load_run", "parse_run"]


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(document)"
        parts.append(f"{prefix}{where}: {item['msg']}")
    return "; ".join(parts)


def parse_run(document: Any, *, source: str = "manifest") -> SelfTaughtRun:
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a SelfTaughtRun mapping, got {type(document).__name__}")
    try:
        return SelfTaughtRun.model_validate(document)
    except ValidationError as error:
        raise SpecError(f"{source}: {format_validation_error(error)}") from None


def load_run(path: str | Path) -> SelfTaughtRun:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror}") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    runs = [d for d in documents if isinstance(d, dict) and d.get("kind") == "SelfTaughtRun"]
    if len(runs) != 1:
        raise SpecError(f"{path}: expected exactly one SelfTaughtRun document, found {len(runs)}")
    return parse_run(runs[0], source=str(path))
