"""One vocabulary of failures: what the user is told, and whether the stage is retried."""

import httpx
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

from selftaught.engines.hub import hub_failure
from selftaught.errors import InvalidInput, ModelNotFound, failure_of


def _http_error(cls, status):
    request = httpx.Request("GET", "https://huggingface.co/api/models/org/m")
    return cls(f"{status} error", response=httpx.Response(status, request=request))


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_busy_or_failing_hub_is_transient_not_a_missing_model(status):
    failure = failure_of(hub_failure("model 'org/m'", _http_error(HfHubHTTPError, status), ModelNotFound))
    assert failure.reason == "SourceUnavailable" and not failure.permanent and "org/m" in failure.message


def test_an_unreachable_hub_is_transient_whatever_library_says_so(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for error in (httpx.ConnectError("connection refused"), ConnectionError("Couldn't reach the Hub"), LocalEntryNotFoundError("no cache")):
        assert failure_of(hub_failure("x", error, InvalidInput)).reason == "SourceUnavailable"


def test_a_model_missing_from_the_cache_of_an_offline_cluster_is_permanent(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    failure = failure_of(hub_failure("model 'org/m'", LocalEntryNotFoundError("no cache"), ModelNotFound))
    assert failure.reason == "ModelNotFound" and failure.permanent and "HF_HUB_OFFLINE" in failure.message


def test_a_missing_or_gated_model_is_permanent_and_says_what_to_set():
    missing = failure_of(hub_failure("model 'org/m'", _http_error(RepositoryNotFoundError, 404), ModelNotFound))
    assert missing.reason == "ModelNotFound" and missing.permanent
    gated = failure_of(hub_failure("model 'org/m'", _http_error(GatedRepoError, 403), ModelNotFound))
    assert gated.permanent and "hfTokenSecret" in gated.message


def test_a_dataset_that_does_not_exist_is_invalid_input():
    from datasets.exceptions import DatasetNotFoundError

    failure = failure_of(hub_failure("hf://datasets/org/d", DatasetNotFoundError("no such dataset"), InvalidInput))
    assert failure.reason == "InvalidInput" and failure.permanent


def test_an_unknown_exception_is_a_transient_stage_failure_naming_its_type():
    failure = failure_of(KeyError("messages"))
    assert (failure.reason, failure.permanent) == ("StageFailed", False) and failure.message.startswith("KeyError")


def test_every_reason_that_is_not_transient_exits_2_whichever_process_found_it():
    """`selftaught run` exits 2 for what must change first (the spec, the input, the store, the
    machine) even when a stage process found it and the runner only relays it, 1 otherwise."""
    from selftaught.errors import EXIT_FIX_FIRST, EXIT_RETRYABLE, Failure, Reason, SelftaughtError, exit_code
    from selftaught.local.runner import StageFailed
    from selftaught.pipeline.table import StageRef

    for reason in Reason:
        found_here = SelftaughtError("x", reason=reason)
        relayed = StageFailed(StageRef("judge", 1), Failure.of(reason, "x"))
        expected = EXIT_FIX_FIRST if reason.permanent else EXIT_RETRYABLE
        assert exit_code(found_here) == exit_code(relayed) == expected, reason
    assert exit_code(StageFailed(StageRef("judge", 1), Failure.of(Reason.DOES_NOT_FIT, "x"))) == 2
    assert exit_code(SelftaughtError("x", reason=Reason.STORE_CORRUPT)) == exit_code(SelftaughtError("x", reason=Reason.SNAPSHOT_UNREADABLE)) == 2


def test_a_full_disk_that_only_a_library_quotes_is_named_as_the_temporary_folder(tmp_path, monkeypatch):
    """safetensors saving a trainer's checkpoint into a full temporary folder raises its own error
    with no path: it is OutOfSpace naming TMPDIR, not a bug."""
    import errno

    class SafetensorError(Exception):
        pass

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    error = SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    failure = failure_of(error)
    assert failure.reason == "OutOfSpace" and not failure.permanent
    assert failure.message.startswith(f"the temporary folder (TMPDIR) {tmp_path} ran out of space (no space left on device; ")
    assert "set TMPDIR to a folder on a larger disk" in failure.message and "SafetensorError" in failure.message
    copied = OSError(errno.ENOSPC, "No space left on device", "/tmp/the-source", None, str(tmp_path / "out" / "file"))
    assert failure_of(copied).message.startswith(f"the folder {tmp_path} ran out of space")  # a copy: its destination's disk
