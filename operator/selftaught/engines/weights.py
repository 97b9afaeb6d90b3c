"""What a model's weights weigh, read without loading or downloading them: the safetensors
headers of a local folder or of a Hub repository (over HTTP), the shard index of an `s3://`
checkpoint. The local runner compares it with its GPUs before any work (`local/placement.py`),
so a model that cannot fit fails in a second, not after a long download and a vLLM start."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from selftaught.api.spec import ModelSource, Storage
from selftaught.engines.hub import hub_failure
from selftaught.engines.models import verify_checkpoint
from selftaught.errors import ModelNotFound
from selftaught.store import ObjectNotFound, open_uri

#: Bytes per parameter of each safetensors dtype.
SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
_FLOATS = {"F64", "F32", "F16", "BF16"}
#: `generation.dtype` (vLLM's and torch's spellings) -> bytes per floating-point parameter.
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
#: config.json's `torch_dtype` / `dtype` -> the safetensors code its tensors are stored in.
_CONFIG_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


@dataclass(frozen=True)
class Weights:
    """Parameters per safetensors dtype, e.g. {"BF16": 8_030_261_248}."""

    parameters: dict[str, int]

    @property
    def stored_bytes(self) -> int:
        return sum(count * SAFETENSORS_BYTES.get(code, 2) for code, count in self.parameters.items())

    def served_bytes(self, dtype: str) -> int:
        """The bytes vLLM holds with `generation.dtype`: `auto` keeps each tensor's size except that
        32- and 64-bit floats are served in 16 bits (vLLM's default); a named float dtype casts every
        floating-point tensor; quantized (integer, 8-bit float) tensors keep their size."""
        total = 0
        for code, count in self.parameters.items():
            size = SAFETENSORS_BYTES.get(code, 2)
            if code in _FLOATS:
                size = min(size, 2) if dtype == "auto" else DTYPE_BYTES.get(dtype, size)
            total += count * size
        return total


def weights_of(model: ModelSource, storage: Storage | None = None) -> Weights | None:
    """The weights of `model`, or None where they cannot be known without downloading them (no
    safetensors, an `s3://` checkpoint of one file). Raises ModelNotFound or SourceUnavailable
    when the model cannot be reached at all."""
    source = model.source
    if source.startswith("s3://"):
        return _from_s3(source, storage)
    path = Path(source.removeprefix("file://")).expanduser()
    if path.exists() or source.startswith(("/", ".", "file://")):
        verify_checkpoint(str(path), storage, path)  # a cut safetensors file is named as the store's damage
        return _from_folder(path)
    return _from_hub(source, model.revision)


def _from_folder(path: Path) -> Weights | None:
    from safetensors import SafetensorError, safe_open

    counts: dict[str, int] = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="numpy") as tensors:  # reads the header only
                for name in tensors.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                    piece = tensors.get_slice(name)
                    counts[piece.get_dtype()] = counts.get(piece.get_dtype(), 0) + math.prod(piece.get_shape())
        except (OSError, SafetensorError) as error:
            raise ModelNotFound(f"model {str(path)!r}: {file.name} is not a safetensors file: {error}") from None
    return Weights(counts) if counts else None


def _from_hub(repo_id: str, revision: str | None) -> Weights | None:
    from huggingface_hub import get_safetensors_metadata
    from huggingface_hub.errors import NotASafetensorsRepoError

    try:
        metadata = get_safetensors_metadata(repo_id, revision=revision)
    except NotASafetensorsRepoError:
        return None
    except Exception as error:  # huggingface_hub, httpx and OS errors: hub_failure sorts them
        raise hub_failure(f"model {repo_id!r}", error, ModelNotFound) from None
    return Weights(dict(metadata.parameter_count))


def _from_s3(uri: str, storage: Storage | None) -> Weights | None:
    """From `model.safetensors.index.json` (its `total_size`) and config.json's dtype; a checkpoint
    of one file has no index, and its header cannot be read without a download."""
    store = open_uri(uri, storage)
    try:
        index = json.loads(store.read_bytes("model.safetensors.index.json"))
        config = json.loads(store.read_bytes("config.json"))
    except ObjectNotFound:
        return None
    except ValueError as error:
        raise ModelNotFound(f"model {uri!r}: unreadable index or config: {error}") from None
    total = (index.get("metadata") or {}).get("total_size")
    code = _CONFIG_DTYPES.get(str(config.get("torch_dtype") or config.get("dtype")), "BF16")
    if not isinstance(total, int | float) or total <= 0:
        return None
    return Weights({code: int(total) // SAFETENSORS_BYTES[code]})

