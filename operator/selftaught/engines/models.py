"""Turning a model source (Hub id, local path, s3:// prefix) into a local folder, once per
machine: pods share a cache volume, the local default shares ~/.cache/selftaught. A LoRA
checkpoint (`train.lora`) is an adapter folder that names its base (`engines/adapters.py`):
`resolve_checkpoint` fetches both.

A checkpoint a run's train stage published (`<stage folder>/attempt-…/checkpoint`, in this run's
store or another's) is verified against its stage's marker before any engine reads it
(`verify_checkpoint`): a file cut short by a partial copy of the store is named, with both sizes,
as a permanent `StoreCorrupt` — never a loader's error that a retry meets again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from selftaught.api.spec import ModelSource, Storage
from selftaught.engines.adapters import ADAPTER_CONFIG, is_adapter, read_adapter
from selftaught.engines.hub import hub_failure
from selftaught.errors import ModelNotFound
from selftaught.store import ObjectNotFound, open_uri
from selftaught.store.integrity import Promise, verify_file
from selftaught.store.layout import published_folder
from selftaught.store.manifest import folder_promises


def cache_root() -> Path:
    return Path(os.environ.get("SELFTAUGHT_CACHE", Path.home() / ".cache" / "selftaught"))


def resolve_model(model: ModelSource, storage: Storage | None = None) -> Path:
    """A local folder with config, weights and tokenizer for `model` (or a LoRA adapter's
    folder: `resolve_checkpoint` also fetches its base)."""
    source = model.source
    if source.startswith("s3://"):
        return _from_s3(source, storage)
    path = Path(source.removeprefix("file://")).expanduser()
    if path.exists() or source.startswith(("/", ".", "file://")):
        if not _is_checkpoint(path):
            raise ModelNotFound(f"model {source!r}: no config.json (or {ADAPTER_CONFIG}) in {path}")
        verify_checkpoint(str(path), storage, path)
        return path
    return _from_hub(source, model.revision)


def checkpoint_promises(source: str, storage: Storage | None) -> dict[str, Promise]:
    """What the marker of the stage that published the folder at `source` promises of each of its
    files (by path inside it); empty for a model no run's stage published."""
    found = published_folder(source)
    if found is None:
        return {}
    stage, attempt, name = found
    return folder_promises(open_uri(stage, storage), attempt, name)


def verify_checkpoint(source: str, storage: Storage | None, folder: Path, *, downloaded: bool = False) -> None:
    """Check the local `folder` of the model at `source` against its stage's marker: every file
    there with its size; its checksum where that costs little next to the read — a file just
    downloaded (read once more from the page cache) or a small one (config, tokenizer), not the
    weights of a checkpoint loaded from a local store, which their size checks."""
    for name, promise in checkpoint_promises(source, storage).items():
        verify_file(promise, f"{source.rstrip('/')}/{name}", folder / name, checksum=True if downloaded else None)


@dataclass(frozen=True)
class LocalCheckpoint:
    """A model on this machine: a full model's folder, or a LoRA adapter's with its base's."""

    base: Path
    adapter: Path | None = None


def resolve_checkpoint(model: ModelSource, storage: Storage | None = None) -> LocalCheckpoint:
    """`model` on this machine; for a LoRA adapter, the base it names too (fetched as any model,
    with the run's storage settings: an `s3://` seed is found where the run finds it)."""
    path = resolve_model(model, storage)
    if not is_adapter(path):
        return LocalCheckpoint(path)
    base = resolve_model(read_adapter(path).base, storage)
    if is_adapter(base):
        raise ModelNotFound(f"model {model.source!r}: a LoRA adapter of another adapter ({base}); its base must be a full model")
    return LocalCheckpoint(base, path)


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() or is_adapter(folder)


def _from_s3(uri: str, storage: Storage | None) -> Path:
    target = cache_root() / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if _is_checkpoint(target):
        return target
    store = open_uri(uri, storage)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        for key in store.list(""):
            if key.startswith("_"):  # our done-marker, not part of the checkpoint
                continue
            store.download_file(key, staging / key)
        if not _is_checkpoint(staging):
            raise ModelNotFound(f"model {uri!r}: no config.json (or {ADAPTER_CONFIG}) under this prefix")
        verify_checkpoint(uri, storage, staging, downloaded=True)
        try:
            staging.rename(target)  # atomic: another process may have won the race, that is fine
        except OSError:
            if not _is_checkpoint(target):
                raise
    except ObjectNotFound as error:
        raise ModelNotFound(f"model {uri!r}: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _from_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_root() / "hub",
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
            )
        )
    except Exception as error:  # huggingface_hub, httpx and OS errors: hub_failure sorts them
        raise hub_failure(f"model {repo_id!r}", error, ModelNotFound) from None
