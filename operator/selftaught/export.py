"""`selftaught export RUN [--iteration i] OUT`: one iteration's judge as a full Hugging Face
checkpoint in a folder, for a serving stack that cannot load a LoRA adapter beside its base.

The checkpoint is chosen as `selftaught serve` chooses it (`serve_process.served_from_run`, which
the command line hands over). A LoRA adapter is merged into its base with PEFT's
`merge_and_unload` (`engines/adapters.py`); a full checkpoint is copied as it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from selftaught.engines.adapters import merge
from selftaught.engines.models import resolve_checkpoint
from selftaught.errors import InvalidInput
from selftaught.pipeline.served import ServedModel


def export_checkpoint(served: ServedModel, output: Path, *, say: Callable[[str], None] = print) -> Path:
    """Write `served`'s checkpoint into `output` (a new or empty folder) as a full model; refuses
    to write over anything."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InvalidInput(f"{output} exists and is not an empty folder: give a new one")
    local = resolve_checkpoint(served.model, served.storage)
    what = "the seed" if served.iteration == 0 else f"iteration {served.iteration}"
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    if local.adapter is None:
        shutil.copytree(local.base, staging)
        say(f"{what} of run {served.name} is a full checkpoint: copied")
    else:
        say(f"merging {what} of run {served.name}: the LoRA adapter {served.model.source} into its base {local.base}")
        merge(local.base, local.adapter, staging)
    if output.exists():
        output.rmdir()
    staging.rename(output)  # whole or not at all: a stopped export leaves no half model under OUT's name
    say(f"wrote {output}")
    return output
