"""Training that outlives its process: the full training state, saved by the HF Trainer's own
checkpointing into the store while it trains, and the next attempt continuing from it.

What is saved is what `Trainer._save_checkpoint` writes and `Trainer.train(resume_from_checkpoint=)`
reads back: DeepSpeed's per-rank shards of weights and optimizer (`global_step<N>/`, `latest`),
the scheduler, every process's random generators, and the trainer state, whose step is the
position in the data (the Trainer skips the batches it had trained on). Nothing of ours is in it.

Where it lives, under the train stage's folder (`store/layout.py`)::

    <stage>/attempt-<id>/resume/checkpoint-<step>/...              as the Trainer wrote it
    <stage>/attempt-<id>/resume/checkpoint-<step>/_complete.json   the marker: written last

A checkpoint without its marker (an upload cut short) is never used. Once a marker is written,
every older checkpoint of the stage, whichever attempt wrote it, is deleted (its marker first), so
the store holds one. The next attempt continues from the newest complete checkpoint under any
attempt folder, if it was made with the same training settings and number of processes (the
`fingerprint`). None of it is published: the stage manifest names only the final model, and
publishing removes every file of the attempt folders it does not name.

When: a TrainerCallback looks at every optimizer step's end. A checkpoint is due when
`train.checkpointEvery` has passed since the last one began (not while the last is still
uploading), and at once when the process was asked to stop (SIGTERM): then the Trainer saves,
training stops, and `Disrupted` says which step was saved and what it cost. The steps wait only
for the local write; the upload runs beside the training in a thread, since the Trainer never
touches a checkpoint folder again once it wrote it (no rotation: `save_total_limit` is unset).
A stop waits for its upload: the process ends after it.

Several processes (ranks): every rank must save at the same step (DeepSpeed's save is a
collective), so the decision is one all-reduce (MAX) per step of each rank's view (a checkpoint
due by its clock, a stop it was sent: Kubernetes signals only the pod of one node). Each rank
writes its own files into its node's folder (DeepSpeed names shards by rank, the Trainer names
random states by process, rank 0 writes the rest), so no file is written twice. After a
barrier (every rank's files on disk), each node's first process (local rank 0) uploads its
node's folder into global rank 0's attempt folder (every process has an attempt id of its own;
rank 0's is the one whose final model is published): the union is the whole checkpoint. Global
rank 0 writes the marker once the same per-step all-reduce says that no node is still uploading
and none failed. To resume, global rank 0 picks the checkpoint and broadcasts it; each node's
first process downloads all of it while the node's other processes wait. One process (the
tests, a CPU run): the collectives are the identity.

GRPO samples once per generation block (several steps) and trains on slices of it; a resumed
trainer samples again and starts at the first slice, so its checkpoints sit between blocks
(`step_multiple`): then a resumed GRPO run is the uninterrupted one, rollouts and all.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from selftaught.errors import Disrupted
from selftaught.store import StorageUnavailable, Store
from selftaught.store.layout import ATTEMPT_PREFIX, RESUME

log = logging.getLogger(__name__)

#: written last into a checkpoint's folder: the checkpoint is complete
MARKER = "_complete.json"


class Stop(Protocol):
    """A request to stop the process (SIGTERM), as a trainer sees it (`stage_process.StopSignal`)."""

    def requested(self) -> bool:
        """The process was asked to stop."""
        ...

    def deferred(self) -> AbstractContextManager[None]:
        """Within: a request waits for the trainer's next step end (it saves, then stops)
        instead of ending the process at once."""
        ...

    @property
    def signal_name(self) -> str:
        """The signal that asked (`SIGTERM`), for messages."""
        ...


class NeverStop:
    """No one asks this process to stop (a trainer called outside a stage process)."""

    signal_name = ""

    def requested(self) -> bool:
        return False

    def deferred(self) -> AbstractContextManager[None]:
        return nullcontext()


@dataclass(frozen=True)
class Saved:
    """A complete checkpoint in the store: what its marker says."""

    step: int
    bytes: int  # what it weighs in the store, all nodes' files together
    seconds: float  # from the save's start to its marker: writing and uploading
    stall: float  # of which the training waited: the local write (and a stop's upload)
    at: float  # epoch seconds its marker was written
    fingerprint: str  # the training settings it continues (see `Checkpointing`)
    folder: str = field(default="", compare=False)  # its key prefix in the store (not in the marker)

    def marker(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "folder"}).encode()


def checkpoint_folders(store: Store, stage_prefix: str) -> dict[str, int]:
    """Every checkpoint folder in the stage's attempt folders (complete or not) -> its step."""
    pattern = re.compile(rf"^(?P<folder>{re.escape(stage_prefix)}/{ATTEMPT_PREFIX}[^/]+/{RESUME}/checkpoint-(?P<step>[0-9]+))/")
    matches = (pattern.match(key) for key in store.list(f"{stage_prefix}/"))
    return {match["folder"]: int(match["step"]) for match in matches if match}


def read_marker(store: Store, folder: str) -> Saved | None:
    """The checkpoint at `folder` if its marker is there and readable, else None (never used)."""
    try:
        data = json.loads(store.read_bytes(f"{folder}/{MARKER}"))
        return Saved(**data, folder=folder)
    except (StorageUnavailable, ValueError, TypeError):
        return None


def newest_complete(store: Store, stage_prefix: str, fingerprint: str) -> Saved | None:
    """The newest complete checkpoint of the stage made with the same settings, whichever attempt wrote it."""
    found = [read_marker(store, folder) for folder in checkpoint_folders(store, stage_prefix)]
    usable = [saved for saved in found if saved is not None and saved.fingerprint == fingerprint]
    return max(usable, key=lambda saved: (saved.step, saved.at), default=None)


def download(store: Store, saved: Saved, into: Path) -> Path:
    """The checkpoint's files (not its marker) into the folder `into`, which appears whole or not at all."""
    staging = into.with_name(f"{into.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for key in store.list(f"{saved.folder}/"):
        name = key.removeprefix(f"{saved.folder}/")
        if name != MARKER:
            store.download_file(key, staging / name)
    staging.rename(into)
    return into


def delete_older(store: Store, stage_prefix: str, step: int) -> list[str]:
    """Remove every checkpoint of the stage older than `step` (marker first: a folder is never
    complete and partly gone). The folders removed."""
    older = sorted(folder for folder, other in checkpoint_folders(store, stage_prefix).items() if other < step)
    for folder in older:
        store.delete(f"{folder}/{MARKER}")
        store.delete_prefix(f"{folder}/")
    return older


class _Upload(threading.Thread):
    """One node's files of one checkpoint into the store, beside the training; the local copy
    goes once it is up (or when the upload is cancelled: the store's copy is the one that counts)."""

    def __init__(self, store: Store, local: Path, folder: str):
        super().__init__(name=f"upload {local.name}", daemon=True)
        self.store, self.local, self.folder = store, local, folder
        self.cancelled = threading.Event()
        self.bytes, self.seconds = 0, 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            for path in sorted(p for p in self.local.rglob("*") if p.is_file()):
                if self.cancelled.is_set():
                    return
                self.store.upload_file(path, f"{self.folder}/{path.relative_to(self.local).as_posix()}")
                self.bytes += path.stat().st_size
        except Exception as error:  # the store failed: this checkpoint is dropped, training goes on
            self.error = error
            log.warning("checkpoint %s not uploaded: %s", self.local.name, error)
        finally:
            self.seconds = time.monotonic() - started
            shutil.rmtree(self.local, ignore_errors=True)


class _Ranks:
    """The few collectives checkpointing needs, over torch.distributed when training runs on
    several processes; the identity on one."""

    def __init__(self, args: Any):
        import torch.distributed as dist

        self.dist = dist
        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.device = args.device
        self.rank, self.local_rank = args.process_index, args.local_process_index

    def reduce(self, values: list[float], op: str = "max") -> list[float]:
        if not self.on:
            return values
        import torch

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.dist.all_reduce(tensor, op=self.dist.ReduceOp.MAX if op == "max" else self.dist.ReduceOp.SUM)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.on:
            self.dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Global rank 0's `value`, on every rank."""
        if not self.on:
            return value
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]


@dataclass
class _Pending:
    """A checkpoint every rank has written locally, still going up to the store."""

    step: int
    write: float  # seconds the local write took (the training waited for it)
    upload: _Upload | None  # this node's upload; None on a node's other processes
    waited: float = 0.0  # seconds the training also waited for the upload (a stop's checkpoint)


class Checkpointing:
    """Periodic and on-stop checkpoints of one training attempt, into the store, and the resume
    from the stage's newest complete one. `fingerprint` names the training settings (the stage's
    `train` section, the model trained from, the number of processes): a checkpoint of other
    settings is not continued. `on_saved` and `on_resumed` hear of each complete checkpoint (on
    global rank 0), e.g. for the progress object. After training, `written`, `resumed` and
    `summary()` say what happened, for the stage manifest."""

    def __init__(
        self,
        store: Store,
        stage_prefix: str,
        folder: str,
        *,
        fingerprint: str,
        every: float | None,
        stop: Stop | None = None,
        on_saved: Callable[[Saved], None] | None = None,
        on_resumed: Callable[[Saved], None] | None = None,
    ):
        self.store, self.stage_prefix, self.folder = store, stage_prefix, folder.rstrip("/")
        self.fingerprint, self.every, self.stop = fingerprint, every, stop or NeverStop()
        self.on_saved, self.on_resumed = on_saved, on_resumed
        #: complete checkpoints this attempt wrote
        self.written: list[Saved] = []
        #: the checkpoint this attempt continued from
        self.resumed: Saved | None = None

    def train(self, trainer: Any, *, step_multiple: int = 1) -> Any:
        """`trainer.train()`, continued from the stage's newest complete checkpoint if there is
        one, saving checkpoints as it goes (only at steps that are multiples of `step_multiple`:
        GRPO's generation blocks). Raises `Disrupted` when a stop ended it early."""
        ranks = _Ranks(trainer.args)
        self.folder = ranks.broadcast(self.folder)  # every process has an attempt id of its own: rank 0's is the one that publishes
        resume = self._resume_point(trainer.args, ranks)
        saves = _Saves(self, ranks, step_multiple, Path(resume) if resume else None)
        trainer.add_callback(_callback(saves))
        # a stop waits for a step end only once steps run (the Trainer's on_train_begin): before that
        # (loading, DeepSpeed starting or compiling its ops, minutes) there is nothing to save, so it ends at once
        deferral = ExitStack()
        saves.begin = lambda: deferral.enter_context(self.stop.deferred())
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        finally:
            deferral.close()
            saves.close()
        if saves.stopped_at is not None:
            raise Disrupted(saves.stop_message())
        return result

    def summary(self) -> dict[str, float | int]:
        """For the stage manifest: checkpoints this attempt completed, their mean seconds (writing
        and uploading), mean seconds the training waited, mean bytes, and the step it resumed from."""
        n = len(self.written)
        return {
            "checkpoints": n,
            "checkpointSeconds": round(sum(s.seconds for s in self.written) / n, 3) if n else 0.0,
            "checkpointStallSeconds": round(sum(s.stall for s in self.written) / n, 3) if n else 0.0,
            "checkpointBytes": round(sum(s.bytes for s in self.written) / n) if n else 0,
            "resumedFromStep": self.resumed.step if self.resumed else 0,
        }

    def _resume_point(self, args: Any, ranks: _Ranks) -> str | None:
        found = ranks.broadcast(newest_complete(self.store, self.stage_prefix, self.fingerprint) if ranks.rank == 0 else None)
        if found is None:
            return None
        local = Path(args.output_dir) / "resumed" / f"checkpoint-{found.step}"
        with args.main_process_first(local=True, desc="checkpoint download"):
            if ranks.local_rank == 0 and not local.is_dir():
                local.parent.mkdir(parents=True, exist_ok=True)
                download(self.store, found, local)
        log.info("continuing from step %d (%s)", found.step, self.store.url(found.folder))
        self.resumed = found
        if ranks.rank == 0 and self.on_resumed is not None:
            self.on_resumed(found)
        return str(local)


class _Saves:
    """The callback's decisions and uploads (no Trainer in here: `_callback` adapts it)."""

    def __init__(self, owner: Checkpointing, ranks: _Ranks, step_multiple: int, resumed: Path | None):
        self.owner, self.ranks, self.multiple = owner, ranks, max(1, step_multiple)
        self.resumed = resumed  # the downloaded checkpoint: read until every rank's first step (its random states)
        self.last = time.monotonic()  # when the last checkpoint began (or the training)
        self.save_started = 0.0
        self.pending: _Pending | None = None
        self.stopping = False
        self.stopped_at: int | None = None  # the step a stop ended the training at
        self.stop_saved: Saved | None = None  # and the checkpoint it saved there
        self.max_steps = 0
        self.begin: Callable[[], object] = lambda: None  # steps start: from here a stop waits for a step end

    def step_end(self, step: int, max_steps: int) -> tuple[bool, bool]:
        """(save now, stop after it) at the end of optimizer step `step`: the same on every rank."""
        self.max_steps = max_steps
        owner, upload = self.owner, self.pending.upload if self.pending else None
        due = owner.every is not None and time.monotonic() - self.last >= owner.every
        due, stop, uploading, failed = self.ranks.reduce(
            [float(due), float(owner.stop.requested()), float(upload is not None and upload.is_alive()), float(upload is not None and upload.error is not None)]
        )  # fmt: skip
        if self.pending is not None and not uploading:
            self._complete(bool(failed))
        if self.resumed is not None:  # every rank is past its first step: the Trainer has read all of it
            if self.ranks.local_rank == 0:
                shutil.rmtree(self.resumed, ignore_errors=True)
            self.resumed = None
        if step >= max_steps or step % self.multiple:
            return False, False  # the final model follows the last step; GRPO saves between generation blocks
        if stop:
            self._finish_pending()  # what is in flight first: it is complete sooner than the new one
            self.stopping, self.save_started = True, time.monotonic()
            return True, True
        if due and self.pending is None:
            self.save_started = time.monotonic()
            return True, False
        return False, False

    def saved(self, step: int, local: Path) -> None:
        """Every rank is writing its part of checkpoint `step` into its node's `local` folder."""
        self.ranks.barrier()  # every part is on disk: DeepSpeed's save ends with a barrier, the Trainer's random states do not
        write = time.monotonic() - self.save_started
        upload = _Upload(self.owner.store, local, f"{self.owner.folder}/checkpoint-{step}") if self.ranks.local_rank == 0 else None
        self.pending, self.last = _Pending(step, write, upload), self.save_started
        if upload is not None:
            upload.start()
        if self.stopping:  # the process ends after this one: the training waits for its upload
            self.stop_saved, self.stopped_at = self._finish_pending(waits=True), step

    def close(self) -> None:
        """Training ended: an upload still running is cut short (the final model supersedes it)."""
        if self.pending is not None and self.pending.upload is not None:
            self.pending.upload.cancelled.set()
            self.pending.upload.join()
        self.pending = None

    def stop_message(self) -> str:
        step, of, saved = self.stopped_at, self.max_steps, self.stop_saved
        signal = self.owner.stop.signal_name
        stopped = f"stopped by {signal}" if signal else "stopped with the other training processes (one was asked to stop)"
        if saved is not None:
            return (
                f"{stopped} at step {step} of {of}: saved its full state in {saved.seconds:.2f} s "
                f"({saved.bytes / 1e6:.1f} MB, training waited {saved.stall:.2f} s); the next attempt continues from step {step}"
            )
        resumed = self.owner.resumed.step if self.owner.resumed else 0
        return f"{stopped} at step {step} of {of}: its state could not be saved; the next attempt continues from step {resumed}"

    def _finish_pending(self, waits: bool = False) -> Saved | None:
        """Wait for the pending upload on every node, then complete it. `waits`: the training
        waits for it (a stop's), so the wait counts as a stall."""
        if self.pending is None:
            return None
        started, upload = time.monotonic(), self.pending.upload
        if upload is not None:
            upload.join()
        (failed,) = self.ranks.reduce([float(upload is not None and upload.error is not None)])
        if waits:
            self.pending.waited = time.monotonic() - started
        return self._complete(bool(failed))

    def _complete(self, failed: bool) -> Saved | None:
        """Every node's upload of the pending checkpoint has ended: global rank 0 writes its marker
        (unless a node failed) and removes the older ones. The checkpoint, on every rank; None if
        it was dropped."""
        pending, self.pending = self.pending, None
        assert pending is not None
        upload, owner = pending.upload, self.owner
        total = self.ranks.reduce([float(upload.bytes if upload else 0)], "sum")[0]  # every node's part
        seconds = self.ranks.reduce([upload.seconds if upload else 0.0])[0]  # the slowest node's upload
        saved = None
        if not failed and self.ranks.rank == 0:
            saved = Saved(
                step=pending.step, bytes=int(total), seconds=round(pending.write + max(seconds, pending.waited), 3),
                stall=round(pending.write + pending.waited, 3),
                at=time.time(), fingerprint=owner.fingerprint, folder=f"{owner.folder}/checkpoint-{pending.step}",
            )  # fmt: skip
            try:
                owner.store.write_bytes(f"{saved.folder}/{MARKER}", saved.marker())
            except StorageUnavailable as error:
                log.warning("checkpoint at step %d not completed: %s", pending.step, error)
                saved = None
        saved = self.ranks.broadcast(saved)
        if saved is None:
            return None
        owner.written.append(saved)
        if self.ranks.rank == 0:
            log.info("checkpoint at step %d complete: %.1f MB in %.1f s, training waited %.1f s", saved.step, saved.bytes / 1e6, saved.seconds, saved.stall)
            try:
                delete_older(owner.store, owner.stage_prefix, saved.step)
            except StorageUnavailable as error:  # the newest is complete all the same; publishing removes the rest
                log.warning("older checkpoints not removed: %s", error)
            if owner.on_saved is not None:
                owner.on_saved(saved)
        return saved


def _callback(saves: _Saves) -> object:
    """The TrainerCallback around `saves`: it asks the Trainer to save (`control.should_save`, so
    the Trainer's own `_save_checkpoint` writes the checkpoint) and to stop."""
    from transformers import TrainerCallback

    class Checkpoints(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            saves.last = time.monotonic()
            saves.begin()

        def on_step_end(self, args, state, control, **kwargs):
            save, stop = saves.step_end(state.global_step, state.max_steps)
            if save:
                control.should_save = True
            if stop:
                control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            saves.saved(state.global_step, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return Checkpoints()
