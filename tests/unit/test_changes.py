from selftaught.api.changes import merge_safe, unsafe_changes
from selftaught.api.load import parse_run

from .test_spec import MINIMAL


def _spec(**spec):
    return parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], **spec}}).spec


def test_scheduling_suspend_and_iterations_are_safe_to_edit_mid_run():
    old = _spec()
    new = _spec(suspend=True, iterations=7, scheduling={"training": {"priorityClassName": "high"}}, generation={"parallelism": 4})
    assert unsafe_changes(old, new) == []


def test_edits_that_would_invalidate_finished_stages_are_named():
    new = _spec(judge={"samples": 4}, models={"seed": {"source": "other/model"}})
    assert unsafe_changes(_spec(), new) == ["judge.samples", "models.seed.source"]


def test_a_mixed_edit_applies_its_safe_part_only():
    merged = merge_safe(_spec(), _spec(judge={"samples": 4}, iterations=9, generation={"parallelism": 3}))
    assert (merged.judge.samples, merged.iterations, merged.generation.parallelism) == (15, 9, 3)
