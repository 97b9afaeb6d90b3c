"""What Argo CD and Flux make of the statuses the operator really writes (built by
`controller.status.build_status`, not hand-written samples)."""

import pytest

from selftaught.api.load import parse_run
from selftaught.controller.decide import Decision, JobView
from selftaught.controller.status import Observation, build_status, status_document
from selftaught.errors import Failure, Reason
from selftaught.pipeline.planner import plan, stage_graph
from selftaught.pipeline.scan import Progress
from selftaught.pipeline.table import StageRef
from selftaught.store.manifest import Manifest

from . import kstatus
from .test_argocd_health import run_health

SPEC = parse_run(
    {
        "apiVersion": "selftaught.dev/v1alpha1",
        "kind": "SelfTaughtRun",
        "metadata": {"name": "r"},
        "spec": {"models": {"seed": {"source": "m"}}, "data": {"instructions": {"source": "x"}}, "storage": {"uri": "s3://b"}, "iterations": 1},
    }
).spec
ALL = frozenset(n.ref for n in stage_graph(SPEC))


def _status(done=frozenset(), generation=1, previous=None, **seen):
    progress = Progress(manifests={ref: Manifest(stage=ref.name, iteration=ref.iteration) for ref in done})
    observation = Observation(generation=generation, now="2026-11-28T10:00:00Z", previous=previous or {}, plan=plan(SPEC, done), progress=progress, **seen)
    return status_document(build_status(observation))


def _obj(status, generation=1):
    return {"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "r", "generation": generation}, "status": status}


RUNNING = Decision(running=[(StageRef("categorize"), JobView("r-categorize-0", "categorize", 0, "active"))])
CASES = {
    "pending": (dict(), "Progressing", "InProgress", "Pending"),
    "running": (dict(decision=RUNNING), "Progressing", "InProgress", "Running"),
    "suspended": (dict(decision=Decision(), suspended=True), "Suspended", "InProgress", "Suspended"),
    "succeeded": (dict(done=ALL, decision=Decision()), "Healthy", "Current", "Succeeded"),
    "failed": (dict(decision=Decision(failure=Failure.of(Reason.NO_TRAINING_DATA, "nothing kept"))), "Degraded", "Failed", "Failed"),
    "refused-edit": (dict(decision=RUNNING, refused=["judge.samples"]), "Degraded", "Failed", "Running"),
    "refused-after-success": (dict(done=ALL, decision=Decision(), refused=["judge.samples"]), "Degraded", "Failed", "Succeeded"),
    "invalid-spec": (dict(invalid=Failure.of(Reason.INVALID_SPEC, "spec.judge.samples: too many")), "Degraded", "Failed", "Failed"),
}


@pytest.mark.parametrize("case", CASES)
def test_gitops_tools_read_each_phase_of_a_run_as_a_user_expects(case):
    seen, argo, flux, phase = CASES[case]
    status = _status(**seen)
    assert status["phase"] == phase
    assert run_health(_obj(status))["status"] == argo
    assert kstatus.compute(_obj(status)).status == flux


def test_a_status_of_an_older_generation_reads_as_in_progress():
    status = _status(done=ALL, decision=Decision())
    assert run_health(_obj(status, generation=2))["status"] == "Progressing"
    assert kstatus.compute(_obj(status, generation=2)).status == "InProgress"


def test_conditions_keep_their_transition_time_until_their_status_changes():
    first = _status(decision=RUNNING)
    again = status_document(build_status(
        Observation(generation=1, now="2026-11-28T11:00:00Z", previous=first, plan=plan(SPEC, frozenset()), progress=Progress(), decision=RUNNING)
    ))
    assert again == first  # nothing changed: no write, no event
    done = _status(done=ALL, decision=Decision(), previous=first)
    succeeded = next(c for c in done["conditions"] if c["type"] == "Succeeded")
    assert succeeded["status"] == "True" and succeeded["lastTransitionTime"] == "2026-11-28T10:00:00Z"
