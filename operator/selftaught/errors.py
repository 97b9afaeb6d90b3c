"""Failures a user can act on. Each has a stable `reason` that ends up in the run's status, its
events and the failed pod's termination message."""

from __future__ import annotations


class SelftaughtError(RuntimeError):
    reason = "StageFailed"
    #: Retrying cannot fix it: the Job's podFailurePolicy fails fast on this exit code.
    permanent = False

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason:
            self.reason = reason


class InvalidInput(SelftaughtError):
    reason = "InvalidInput"
    permanent = True


class EmptyDataset(SelftaughtError):
    reason = "EmptyDataset"
    permanent = True


class ModelNotFound(SelftaughtError):
    reason = "ModelNotFound"
    permanent = True


class StorageUnavailable(SelftaughtError):
    reason = "StorageUnavailable"


#: Exit codes the Job's podFailurePolicy knows: 3 means "do not retry".
EXIT_PERMANENT = 3
EXIT_RETRYABLE = 1


class NoTrainingData(SelftaughtError):
    reason = "NoTrainingData"
    permanent = True
