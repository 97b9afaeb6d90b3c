"""The local paths a run names, looked at before launch (`selftaught plan`): a data file or model
folder that is not there is one sentence naming the field, not an estimate that quietly assumes
an 8B model or an unknown number of instructions. URIs (`s3://`, `hf://`) and Hub ids are left to
the stage that reads them."""

from __future__ import annotations

from pathlib import Path

from selftaught.api.spec import SelfTaughtRunSpec

REMOTE = ("s3://", "hf://")


def _local(source: str) -> Path:
    return Path(source.removeprefix("file://")).expanduser()


def looks_like_path(source: str) -> bool:
    """A model source that can only be a path: absolute, `./`, `../`, `~`, `file://`, or more
    folders than a Hub id (`org/name`) has."""
    return source.startswith(("/", ".", "~", "file://")) or source.count("/") > 1


def path_problems(spec: SelfTaughtRunSpec) -> list[str]:
    """One sentence per local path of the run that cannot be what it names."""
    problems = []
    data = (("data.instructions.source", spec.data.instructions.source), ("data.evaluation.source", spec.data.evaluation.source))
    for field, source in data:
        if not source or source.startswith(REMOTE):
            continue
        path = _local(source)
        if not path.exists():
            problems.append(f"{field}: {source}: no such file or folder")
        elif path.is_dir() and not any(path.rglob("*.jsonl")):
            problems.append(f"{field}: {source}: a folder without any .jsonl file")
    models = (("models.seed.source", spec.models.seed), ("models.generator.source", spec.models.generator))
    for field, model in models:
        if model is None or model.source.startswith(REMOTE):
            continue
        path = _local(model.source)
        if path.is_dir() and not (path / "config.json").is_file():
            problems.append(f"{field}: {model.source}: no config.json in this folder, so it is no Hugging Face checkpoint")
        elif not path.exists() and looks_like_path(model.source):
            problems.append(f"{field}: {model.source}: no such folder (a Hub id is written org/name)")
    uri = spec.storage.uri
    if not uri.startswith("s3://") and _local(uri).is_file():
        problems.append(f"storage.uri: {uri}: a file, where the run's store needs a folder")
    return problems
