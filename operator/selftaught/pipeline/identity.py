"""What a run's data and models are, by content: the identities a stage key hashes
(`pipeline/lineage.py`).

- a data source in a folder or S3: every object under it, by its store's fingerprint (a local
  file's size and sha256, an S3 object's size and ETag); a Hub dataset (`hf://datasets/...`), which
  cannot be read without downloading it, by its name and split (fields the key also holds);
- a model folder a run's stage published (`<stage>/attempt-…/checkpoint`): the sha256 of every
  file its marker recorded — the checkpoint's own digest, never read again;
- any other local or S3 model folder: every file, by its fingerprint;
- a Hub model: its id and revision (pin `revision` to a commit for keys that follow the weights).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from selftaught.api.spec import ModelSource, SelfTaughtRunSpec
from selftaught.pipeline.lineage import Identities
from selftaught.store import StorageAddress, open_uri
from selftaught.store.layout import published_folder
from selftaught.store.manifest import folder_promises


def _hash(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _local(source: str) -> Path | None:
    path = Path(source.removeprefix("file://")).expanduser()
    return path if not source.startswith(("s3://", "hf://")) and path.exists() else None


def _objects(uri: str, storage: StorageAddress) -> list[str]:
    """`name fingerprint` of every object under `uri` (a file or a folder, local or S3)."""
    path = _local(uri)
    if path is not None and path.is_file():
        uri = str(path.parent)
        store = open_uri(uri, storage)
        return [f"{path.name} {store.fingerprint(path.name)}"]
    store = open_uri(uri, storage)
    return [f"{key} {store.fingerprint(key)}" for key in store.list("") if not key.rsplit("/", 1)[-1].startswith(".")]


def data_identity(source: str | None, storage: StorageAddress) -> str:
    if not source:
        return "none"
    if source.startswith("hf://"):
        return f"hub {source}"
    if not source.startswith("s3://") and _local(source) is None:
        return f"missing {source}"  # the stage that reads it will say so; the key only has to differ
    return "objects " + _hash(_objects(source, storage))


def model_identity(model: ModelSource, storage: StorageAddress) -> str:
    source = model.source
    found = published_folder(source)
    if found is not None:
        stage, attempt, name = found
        promises = folder_promises(open_uri(stage, storage), attempt, name)
        if promises and all(promise.sha256 for promise in promises.values()):
            return "checkpoint " + _hash([f"{path} {promise.sha256}" for path, promise in sorted(promises.items())])
    if source.startswith("s3://") or _local(source) is not None:
        return "files " + _hash(_objects(source, storage))
    return f"hub {source}@{model.revision or 'main'}"


def identities(spec: SelfTaughtRunSpec) -> Identities:
    """The identities of `spec`'s data and models, read from where they are (one listing each,
    and a local file read once)."""
    storage = spec.storage
    seed = model_identity(spec.models.seed, storage)
    return Identities(
        instructions=data_identity(spec.data.instructions.source, storage),
        evaluation=data_identity(spec.data.evaluation.source, storage),
        seed=seed,
        generator=model_identity(spec.models.generator, storage) if spec.models.generator else seed,
    )
