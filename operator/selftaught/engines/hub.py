"""What a failure to reach the Hugging Face Hub means for the user: the thing is not there (or
not theirs to read) — permanent — or the Hub is down, rate-limits us or cannot be reached —
transient, the stage is retried. One rule for models and datasets alike."""

from __future__ import annotations

import os

from selftaught.errors import SelftaughtError, SourceUnavailable

#: HTTP statuses after which the same request may well succeed
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_network(error: BaseException) -> bool:
    """Connection refused, DNS failure, timeout, a dropped stream: any library's spelling."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    try:
        import httpx

        if isinstance(error, httpx.TransportError):
            return True
    except ImportError:  # pragma: no cover - huggingface_hub brings httpx
        pass
    try:
        import requests

        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and _is_network(cause)


def hub_failure(subject: str, error: BaseException, missing: type[SelftaughtError]) -> SelftaughtError:
    """`missing` (e.g. ModelNotFound, InvalidInput) for what retrying cannot fix, else
    SourceUnavailable. `subject` names the thing: "model 'org/name'"."""
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    if isinstance(error, LocalEntryNotFoundError):  # before the network test: its cause is one
        if _offline():  # offline by configuration (an air-gapped cluster): only the cache counts
            return missing(f"{subject}: not in the local cache, and HF_HUB_OFFLINE forbids downloading it")
        return SourceUnavailable(f"{subject}: not in the local cache and the Hugging Face Hub is unreachable")
    status = _status(error)
    if status in TRANSIENT_STATUSES or (status is None and _is_network(error)):
        return SourceUnavailable(f"{subject}: the Hugging Face Hub is unavailable ({status or type(error).__name__}): {error}")
    if isinstance(error, GatedRepoError) or status in (401, 403):
        return missing(f"{subject}: access denied by the Hub (gated or private: set models.hfTokenSecret / HF_TOKEN)")
    return missing(f"{subject}: {type(error).__name__}: {error}")
