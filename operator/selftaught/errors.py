"""One vocabulary of failures.

`Reason` names every failure the code reports, in the run's status, its events, a failed pod's
termination message and `selftaught run`'s error line. Each reason has a class:

- *transient*: the world may be better in a minute; the operator retries the stage with backoff;
- *permanent*: retrying with the same spec cannot help; the stage exits `EXIT_PERMANENT` (the
  Job's podFailurePolicy fails fast on it) and the run fails until its spec is edited;
- *operator*: the operator's own verdict on the run as a whole (its spec as this operator reads
  it, its recorded snapshot, its name, an edit); permanent for a stage too, but looked at again on
  every pass, so it heals when its cause goes (a newer operator, deleted data, an edit undone).

Code raises the exceptions below, each carrying its `Reason`; the stage process turns any
exception into one `Failure` with `failure_of`, so there is exactly one place that decides what a
user is told. A `Failure` travels from a pod to the run's status as the termination message,
written and read by one codec (`encode`, `decode`, and `shell_write` for a pod's shell).
Kubernetes' own reasons (ImagePullBackOff, Unschedulable, BackoffLimitExceeded...) pass through
as they are: they are not members, and they are transient.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

#: Exit codes the Job's podFailurePolicy knows: 3 means "do not retry".
EXIT_PERMANENT = 3
EXIT_RETRYABLE = 1
#: What a `selftaught` command (`run`, `status`, `plan`, `score`...) exits with when what went
#: wrong will not change by trying again: the spec, the input, the store or the machine must
#: change first. Every reason that is not transient, whichever process found it (`exit_code`).
EXIT_FIX_FIRST = 2


class ReasonClass(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    OPERATOR = "operator"


class Reason(StrEnum):
    """A failure's reason: its value is the CamelCase string users see, `kind` its class and
    `meaning` the line of the reasons table in docs/architecture.md."""

    kind: ReasonClass
    meaning: str

    def __new__(cls, value: str, kind: ReasonClass, meaning: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.kind = kind
        member.meaning = meaning
        return member

    @property
    def permanent(self) -> bool:
        """Retrying the stage with the same spec cannot help (exit code `EXIT_PERMANENT`)."""
        return self.kind is not ReasonClass.TRANSIENT

    # -- raised by a stage process (or the local runner) -----------------------------------------
    STAGE_FAILED = "StageFailed", ReasonClass.TRANSIENT, "an unexpected error (a bug or an engine crash): its type and message, the traceback in the log"
    OUT_OF_MEMORY = "OutOfMemory", ReasonClass.TRANSIENT, "the stage process ran out of (host) memory"
    INVALID_INPUT = "InvalidInput", ReasonClass.PERMANENT, "an input that cannot be used (missing, malformed, a record too long under onBadRecord: fail): the message names file and line"
    EMPTY_DATASET = "EmptyDataset", ReasonClass.PERMANENT, "a dataset without one usable record: the message names it"
    MODEL_NOT_FOUND = "ModelNotFound", ReasonClass.PERMANENT, "a model that does not exist, is gated or private (set models.hfTokenSecret), or is not in an offline cache"
    NO_TRAINING_DATA = "NoTrainingData", ReasonClass.PERMANENT, "the judge kept no judgment to train on"
    DOES_NOT_FIT = "DoesNotFit", ReasonClass.PERMANENT, "the run asks more of the machine than it has (GPUs, GPU memory): said before any work"
    CUDA_UNAVAILABLE = "CudaUnavailable", ReasonClass.PERMANENT, "a pod that asked for GPUs cannot use them (a driver older than the image's CUDA, a node without the nvidia runtime): said at the stage's start with the driver's and runtime's own words, never a run on CPU that holds the GPUs for days"
    NOTHING_TO_SERVE = "NothingToServe", ReasonClass.PERMANENT, "no checkpoint of the run can be served (or not the one serve.iteration asks for)"
    OUT_OF_SPACE = "OutOfSpace", ReasonClass.TRANSIENT, "a disk is full: the message names it (the store's folder, the temporary folder) and what is free there"
    STORAGE_UNAVAILABLE = "StorageUnavailable", ReasonClass.TRANSIENT, "the store did not answer or failed; the operator fails the run after SELFTAUGHT_STORAGE_GRACE_SECONDS"
    OBJECT_NOT_FOUND = "ObjectNotFound", ReasonClass.TRANSIENT, "an object of the store that should exist does not (a user's missing input is InvalidInput)"
    STORAGE_DENIED = "StorageDenied", ReasonClass.PERMANENT, "the store refuses us: no bucket, no access, no credentials, a read-only folder"
    STORE_KEY_INVALID = "StoreKeyInvalid", ReasonClass.PERMANENT, "a key that would leave the store's root"
    STORE_CORRUPT = "StoreCorrupt", ReasonClass.PERMANENT, "an object of the run's store that is not what it should be: the message names it, to fix or delete"
    SOURCE_UNAVAILABLE = "SourceUnavailable", ReasonClass.TRANSIENT, "the Hugging Face Hub is unreachable, rate-limits or answers 5xx"
    ENDPOINT_UNAVAILABLE = "EndpointUnavailable", ReasonClass.TRANSIENT, "an OpenAI-compatible endpoint did not answer after its client's retries"
    RENDEZVOUS_TIMEOUT = "RendezvousTimeout", ReasonClass.TRANSIENT, "a multi-node training pod waited in vain for index 0's DNS name"
    RUN_IN_PROGRESS = "RunInProgress", ReasonClass.TRANSIENT, "another `selftaught run` holds the run's lease"
    LEASE_LOST = "LeaseLost", ReasonClass.TRANSIENT, "this `selftaught run` lost the run's lease to another runner and stopped"
    INTERRUPTED = "Interrupted", ReasonClass.TRANSIENT, "`selftaught run` was stopped (SIGTERM, SIGHUP): run the same command to resume"
    # -- seen by the operator in a Job or its pods --------------------------------------------------
    STAGE_CRASHED = "StageCrashed", ReasonClass.TRANSIENT, "the stage died without its own reason: its exit code, the container's reason and the end of its log"
    OOM_KILLED = "OOMKilled", ReasonClass.TRANSIENT, "the kubelet says the container was killed for its memory limit (its terminated reason OOMKilled); any other exit 137 is a SIGKILL, StageCrashed"
    JOB_FAILED = "JobFailed", ReasonClass.TRANSIENT, "the Job failed and neither its condition nor a pod said why"
    DEADLINE_EXCEEDED = "DeadlineExceeded", ReasonClass.TRANSIENT, "the Job ran longer than its activeDeadlineSeconds"
    DISRUPTED = "Disrupted", ReasonClass.TRANSIENT, "a pod was preempted, drained, evicted or lost with its node (DisruptionTarget), or the stage stopped itself on SIGTERM after saving its state: the attempt spends no retry and continues from the newest saved state"
    TOO_MANY_DISRUPTIONS = "TooManyDisruptions", ReasonClass.PERMANENT, "a stage was disrupted more often than retries.disruptionsPerStage allows: raise it, or move the stage to nodes that are not reclaimed (docs/spot.md)"
    NO_MANIFEST = "NoManifest", ReasonClass.TRANSIENT, "the Job reported success but the stage left no manifest"
    JOB_DELETED = "JobDeleted", ReasonClass.TRANSIENT, "the attempt's Job vanished before it finished (its TTL, someone): a failed attempt"
    STAGE_START_TIMEOUT = "StageStartTimeout", ReasonClass.TRANSIENT, "the Job's pods did not start within startupTimeoutSeconds: it is deleted, the attempt fails with their reason"
    JOB_REFUSED = "JobRefused", ReasonClass.TRANSIENT, "the API server forbids the stage's Job (403: an admission webhook such as Gatekeeper or Kyverno, a count/jobs quota): one event, then retried with growing back-off (retries.backoffSeconds doubled, at most 5 min) and no attempt spent, until the policy or quota lets it through"
    INVALID_JOB = "InvalidJob", ReasonClass.PERMANENT, "the API server refused the stage's Job as invalid (a typo in an override): the run fails once"
    # -- the operator's verdicts on the run ------------------------------------------------------
    INVALID_SPEC = "InvalidSpec", ReasonClass.OPERATOR, "a spec this operator cannot read: the message names each bad field"
    SNAPSHOT_UNREADABLE = "SnapshotUnreadable", ReasonClass.OPERATOR, "the run's recorded spec (run.json) is not JSON or is from a newer selftaught: the message names it"
    RUN_NAME_IN_USE = "RunNameInUse", ReasonClass.OPERATOR, "the store holds an earlier run of this name with another spec: delete its data, use a new name, or apply its spec"
    UNSAFE_EDIT = "UnsafeEdit", ReasonClass.OPERATOR, "an edit of fields whose stage has output is refused (SpecAccepted=False, Stalled=True); the run goes on with its accepted spec"


def as_reason(reason: str) -> Reason | str:
    """`reason` as a member of the vocabulary, or as it is (a reason Kubernetes gave)."""
    try:
        return Reason(reason)
    except ValueError:
        return reason


def reason_class(reason: str) -> ReasonClass:
    """A reason's class; Kubernetes' own (not members) are transient."""
    found = as_reason(reason)
    return found.kind if isinstance(found, Reason) else ReasonClass.TRANSIENT


# -- the failure value, and the termination message that carries it ------------------------------


@dataclass(frozen=True)
class Failure:
    """What went wrong, for the user: from a pod's termination message to the run's status."""

    reason: str  #: a `Reason`, or a reason Kubernetes gave
    message: str
    permanent: bool = False

    @classmethod
    def of(cls, reason: Reason, message: str) -> Failure:
        """A failure whose permanence is its reason's class."""
        return cls(reason, message, reason.permanent)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


#: where a stage writes its termination message (the pod's terminationMessagePath; a local
#: runner's scratch file): Kubernetes caps it at 4 KiB
TERMINATION_MESSAGE_VARIABLE = "SELFTAUGHT_TERMINATION_MESSAGE_PATH"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: set by the operator on a stage container: how many GPUs its pod requested; the stage checks at
#: its start that CUDA can use them (`CudaUnavailable`; engines/devices.py). Unset or 0: no check
GPUS_VARIABLE = "SELFTAUGHT_GPUS"
MESSAGE_LIMIT = 3500
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


#: how much of a clipped message's start is kept (what failed, its exit code); the rest is its end
CLIP_HEAD = 160


def clip(text: str, limit: int = 1000) -> str:
    """`text` cut to `limit` characters around the middle: a failure says what failed first and
    what went wrong last (a log's last line, a traceback's exception), so both ends are kept."""
    if len(text) <= limit:
        return text
    head = min(CLIP_HEAD, limit // 4)
    return f"{text[:head]} … {text[-(limit - head - 3):]}"


def encode(failure: Failure) -> str:
    """The termination message of a failed stage (JSON: reason, message, permanent)."""
    return json.dumps({"reason": str(failure.reason), "message": clip(failure.message, MESSAGE_LIMIT), "permanent": failure.permanent})


def decode(text: str | None) -> Failure | None:
    """The failure a stage wrote, or None when `text` is not one (nothing, a crash's log tail)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("reason"):
        return None
    return Failure(as_reason(str(data["reason"])), str(data.get("message") or ""), bool(data.get("permanent")))


def shell_write(failure: Failure) -> str:
    """A POSIX shell command that writes `encode(failure)` to the termination message, for a pod
    whose shell fails before any stage process runs. Each `${NAME}` in the message is expanded by
    the shell, so its value must need no JSON escaping (a DNS name, a number)."""
    quoted = "'" + encode(failure).replace("'", "'\\''") + "'"
    spliced = _VARIABLE.sub(lambda match: "'\"${" + match.group(1) + "}\"'", quoted)
    return f'printf \'%s\' {spliced} > "${TERMINATION_MESSAGE_VARIABLE}"'


# -- the exceptions --------------------------------------------------------------------------------


class SelftaughtError(RuntimeError):
    """A failure with its reason; `permanent` is the reason's class."""

    reason: Reason | str = Reason.STAGE_FAILED

    def __init__(self, message: str, *, reason: Reason | str | None = None):
        super().__init__(message)
        if reason:
            self.reason = reason

    @property
    def permanent(self) -> bool:
        return reason_class(self.reason) is not ReasonClass.TRANSIENT


# -- permanent (InvalidSpec: the operator's) : the input, the spec or the model must change -------


class InvalidSpec(SelftaughtError, ValueError):
    """A manifest that is not a valid SelfTaughtRun; the message names each bad field."""

    reason = Reason.INVALID_SPEC


class InvalidInput(SelftaughtError):
    reason = Reason.INVALID_INPUT


class EmptyDataset(SelftaughtError):
    reason = Reason.EMPTY_DATASET


class ModelNotFound(SelftaughtError):
    reason = Reason.MODEL_NOT_FOUND


class NoTrainingData(SelftaughtError):
    reason = Reason.NO_TRAINING_DATA


class DoesNotFit(InvalidInput):
    """The run asks more of this machine than it has (more GPUs than are visible, a model larger
    than its GPUs hold): said before any work, with what is needed and what there is."""

    reason = Reason.DOES_NOT_FIT


# -- the store and the sources: transient, but for what retrying cannot fix ----------------------


class StorageUnavailable(SelftaughtError):
    """The store could not be reached or answered with an error; the message names the URI."""

    reason = Reason.STORAGE_UNAVAILABLE


class ObjectNotFound(StorageUnavailable):
    """An object that should exist does not (callers that read *user* input turn it into
    InvalidInput; a stage's own missing input is retried)."""

    reason = Reason.OBJECT_NOT_FOUND


class StorageDenied(StorageUnavailable):
    """The store refuses us: no bucket, no access, no credentials. Retrying the same Secret will
    not help, so this one is permanent."""

    reason = Reason.STORAGE_DENIED


class StoreKeyInvalid(StorageUnavailable):
    """A key that would leave the store's root (absolute, or climbing with `..`): a run must never
    read or write outside its own folder, whatever its namespace and name say."""

    reason = Reason.STORE_KEY_INVALID


class StoreCorrupt(StorageUnavailable):
    """An object of the run's store that is not what it should be (a manifest that is not JSON):
    retrying reads the same bytes, so the message names the object to fix or delete."""

    reason = Reason.STORE_CORRUPT


class CudaUnavailable(SelftaughtError):
    """The stage's pod was given GPUs that CUDA cannot use: a driver older than the image's CUDA,
    a node without the nvidia container runtime. Retrying on the same node cannot help."""

    reason = Reason.CUDA_UNAVAILABLE


class OutOfSpace(SelftaughtError):
    """A disk is full; the message names it (the store's folder, the temporary folder), says what
    is free there and where else to write. Transient: freeing space fixes it for the same spec."""

    reason = Reason.OUT_OF_SPACE


def disk_full(folder: str | os.PathLike[str], what: str, hint: str, writing: str | None = None) -> OutOfSpace:
    """The error for a write (of `writing`) that found the disk of `folder` (`what` it is to the
    user: "the store") full, with what is free there now and `hint`, what to do."""
    try:
        usage = shutil.disk_usage(folder)
        free = f"; {_size(usage.free)} free of {_size(usage.total)} now"
    except OSError:
        free = ""
    return OutOfSpace(f"{what} {folder} ran out of space (no space left on device{f' writing {writing}' if writing else ''}{free}); {hint}")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.0f} TiB"


def out_of_space(error: BaseException) -> bool:
    """Whether `error` says a disk is full: an OSError with ENOSPC, or a library's error that only
    quotes it (safetensors: `IoError(Os { code: 28, kind: StorageFull, ... })`)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    return "No space left on device" in text or "StorageFull" in text


def full_disk(error: BaseException) -> OutOfSpace:
    """The full disk behind an `out_of_space` error that no store call named: the folder of the
    file it names (a copy names its destination second), else the temporary folder (TMPDIR), where
    a stage writes what it keeps locally (a trainer's checkpoint, an output before its upload)."""
    path = (getattr(error, "filename2", None) or getattr(error, "filename", None)) if isinstance(error, OSError) else None
    if path:
        folder = next((p for p in Path(os.fsdecode(path)).parents if p.is_dir()), Path("/"))
        return disk_full(folder, "the folder", "free space on its disk")
    folder = os.environ.get("TMPDIR") or tempfile.gettempdir()
    full = disk_full(folder, "the temporary folder (TMPDIR)", "free space there, or set TMPDIR to a folder on a larger disk")
    return OutOfSpace(f"{full} ({type(error).__name__}: {error})" if not isinstance(error, OSError) else str(full))


class SourceUnavailable(SelftaughtError):
    """A model or dataset host (the Hugging Face Hub) is unreachable, rate-limits us or fails."""

    reason = Reason.SOURCE_UNAVAILABLE


class EndpointUnavailable(SelftaughtError):
    """An OpenAI-compatible endpoint (a served judge) did not answer, or failed, after the bounded
    retries of its client."""

    reason = Reason.ENDPOINT_UNAVAILABLE


class Disrupted(SelftaughtError):
    """The stage was asked to stop (SIGTERM: a pod deleted, a node drained or reclaimed, Ctrl-C
    locally) and stopped after saving what it could: the next attempt continues from there and
    spends no retry. The message says what was saved."""

    reason = Reason.DISRUPTED


def failure_of(error: BaseException) -> Failure:
    """What the user is told about any exception that ends a stage. Unknown exceptions are a
    bug or an engine crash: transient, with the exception's type in the message."""
    if isinstance(error, SelftaughtError):
        return Failure(error.reason, str(error), error.permanent)
    if out_of_space(error):
        return failure_of(full_disk(error))
    if isinstance(error, MemoryError):
        return Failure.of(Reason.OUT_OF_MEMORY, "the stage ran out of memory")
    return Failure.of(Reason.STAGE_FAILED, f"{type(error).__name__}: {error}")


def exit_code(error: SelftaughtError) -> int:
    """What a `selftaught` command exits with for `error`: `EXIT_FIX_FIRST` (2) when retrying
    cannot help (a bad spec or input, a model that is not there, a store that refuses us or holds
    damaged objects, a machine too small: every reason that is not transient, whether the command
    found it or a stage process did), 1 when the world may be better in a minute."""
    return EXIT_FIX_FIRST if error.permanent else EXIT_RETRYABLE
