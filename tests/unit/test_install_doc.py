"""docs/install.md's "When a run does not start" names every reason a user can meet, with what
to do: each of our Reasons, and each Kubernetes reason the operator passes through."""

from pathlib import Path

from selftaught.controller.kube import CREATING_PROBLEMS, STARTUP_PROBLEMS
from selftaught.errors import Reason

DOC = Path(__file__).resolve().parents[2] / "docs" / "install.md"
KUBERNETES = {"Queued", "Unschedulable", "FailedCreate", "JobCreateFailed", "OutOf<resource>", "NodeAffinity", "Evicted", *STARTUP_PROBLEMS, *CREATING_PROBLEMS}


def section() -> str:
    text = DOC.read_text()
    start = text.index("## When a run does not start")
    return text[start : text.index("\n## ", start + 1)]


def test_every_reason_a_run_can_show_has_a_row_that_says_what_to_do():
    rows = [line for line in section().splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in row.split("|")[1].replace("`", "").replace("(", ",").replace(")", ",").split(",") if name.strip()}
    named = {name.strip() for name in named}
    missing = ({reason.value for reason in Reason} | KUBERNETES) - named
    assert not missing, f"docs/install.md lacks a row for {sorted(missing)}"
    assert all(len(row.split("|")) == 5 and row.split("|")[3].strip() for row in rows)  # each says what to do
