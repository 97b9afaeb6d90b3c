"""One vocabulary of failures. Each has a stable `reason` (in the run's status, its events and a
failed pod's termination message) and a class: *permanent* (retrying cannot fix it; the Job's
podFailurePolicy fails fast on `EXIT_PERMANENT`) or *transient* (the operator retries the stage
with backoff). Code raises these; the stage process turns any exception into one with
`failure_of`, so there is exactly one place that decides what a user is told.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Exit codes the Job's podFailurePolicy knows: 3 means "do not retry".
EXIT_PERMANENT = 3
EXIT_RETRYABLE = 1


class SelftaughtError(RuntimeError):
    reason = "StageFailed"
    permanent = False

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason:
            self.reason = reason


# -- permanent: the input, the spec or the model must change -------------------------------------


class InvalidSpec(SelftaughtError, ValueError):
    """A manifest that is not a valid SelfTaughtRun; the message names each bad field."""

    reason = "InvalidSpec"
    permanent = True


class InvalidInput(SelftaughtError):
    reason = "InvalidInput"
    permanent = True


class EmptyDataset(SelftaughtError):
    reason = "EmptyDataset"
    permanent = True


class ModelNotFound(SelftaughtError):
    reason = "ModelNotFound"
    permanent = True


class NoTrainingData(SelftaughtError):
    reason = "NoTrainingData"
    permanent = True


class DoesNotFit(InvalidInput):
    """The run asks more of this machine than it has (more GPUs than are visible, a model larger
    than its GPUs hold): said before any work, with what is needed and what there is."""

    reason = "DoesNotFit"


# -- transient: the world may be better in a minute ------------------------------------------------


class StorageUnavailable(SelftaughtError):
    """The store could not be reached or answered with an error; the message names the URI."""

    reason = "StorageUnavailable"


class ObjectNotFound(StorageUnavailable):
    """An object that should exist does not (callers that read *user* input turn it into
    InvalidInput; a stage's own missing input is retried)."""

    reason = "ObjectNotFound"


class StorageDenied(StorageUnavailable):
    """The store refuses us: no bucket, no access, no credentials. Retrying the same Secret will
    not help, so this one is permanent."""

    reason = "StorageDenied"
    permanent = True


class StoreKeyInvalid(StorageUnavailable):
    """A key that would leave the store's root (absolute, or climbing with `..`): a run must never
    read or write outside its own folder, whatever its namespace and name say."""

    reason = "StoreKeyInvalid"
    permanent = True


class StoreCorrupt(StorageUnavailable):
    """An object of the run's store that is not what it should be (a manifest that is not JSON):
    retrying reads the same bytes, so the message names the object to fix or delete."""

    reason = "StoreCorrupt"
    permanent = True


class SourceUnavailable(SelftaughtError):
    """A model or dataset host (the Hugging Face Hub) is unreachable, rate-limits us or fails."""

    reason = "SourceUnavailable"


class EndpointUnavailable(SelftaughtError):
    """An OpenAI-compatible endpoint (a served judge) did not answer, or failed, after the bounded
    retries of its client."""

    reason = "EndpointUnavailable"


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    permanent: bool


def failure_of(error: BaseException) -> Failure:
    """What the user is told about any exception that ends a stage. Unknown exceptions are a
    bug or an engine crash: transient, with the exception's type in the message."""
    if isinstance(error, SelftaughtError):
        return Failure(error.reason, str(error), error.permanent)
    if isinstance(error, MemoryError):
        return Failure("OutOfMemory", "the stage ran out of memory", False)
    return Failure("StageFailed", f"{type(error).__name__}: {error}", False)
