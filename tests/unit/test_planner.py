from selftaught.api.load import parse_run
from selftaught.pipeline.planner import plan, stage_graph
from selftaught.pipeline.table import StageRef

from .test_spec import MINIMAL


def _spec(**spec):
    return parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], **spec}}).spec


def labels(refs):
    return [r.label for r in refs]


def test_a_new_run_starts_with_categorize_only():
    step = plan(_spec(iterations=2), frozenset())
    assert labels(step.ready) == ["categorize"]
    assert not step.finished and step.total == 3 + 1 + 2 * 3


def test_stages_follow_the_method_and_iterations_chain_through_checkpoints():
    graph = {n.ref.label: labels(n.needs) for n in stage_graph(_spec(iterations=2))}
    assert graph == {
        "categorize": [], "select": ["categorize"], "pairs": ["select"], "evaluate-0": ["pairs"],
        "judge-1": ["pairs"], "train-1": ["judge-1"], "evaluate-1": ["train-1"],
        "judge-2": ["pairs", "judge-1", "train-1"], "train-2": ["judge-2"], "evaluate-2": ["train-2"],
    }  # fmt: skip


def test_after_a_checkpoint_its_evaluation_and_the_next_judge_can_run_together():
    done = {StageRef(n) for n in ("categorize", "select", "pairs")} | {
        StageRef("evaluate", 0), StageRef("judge", 1), StageRef("train", 1)
    }
    assert labels(plan(_spec(iterations=2), done).ready) == ["evaluate-1", "judge-2"]


def test_a_run_with_every_stage_done_is_finished():
    spec = _spec(iterations=1)
    step = plan(spec, frozenset(n.ref for n in stage_graph(spec)))
    assert step.finished and step.current is None


def test_without_evaluation_data_no_evaluate_stage_is_planned():
    spec = _spec(iterations=1, data={"instructions": {"source": "x.jsonl"}, "evaluation": {"heldOutFraction": 0}})
    assert "evaluate" not in {n.ref.name for n in stage_graph(spec)}


def test_the_baseline_evaluation_can_be_turned_off():
    assert StageRef("evaluate", 0) not in {n.ref for n in stage_graph(_spec(evaluate={"baseline": False}))}


def test_a_grpo_iteration_has_no_judge_stage_and_trains_from_the_previous_iteration():
    graph = {n.ref.label: labels(n.needs) for n in stage_graph(_spec(iterations=2, train={"method": "grpo"}))}
    assert graph == {
        "categorize": [], "select": ["categorize"], "pairs": ["select"], "evaluate-0": ["pairs"],
        "train-1": ["pairs"], "evaluate-1": ["train-1"], "train-2": ["pairs", "train-1"], "evaluate-2": ["train-2"],
    }  # fmt: skip
    done = {StageRef(n) for n in ("categorize", "select", "pairs")}
    assert labels(plan(_spec(iterations=2, train={"method": "grpo"}), done).ready) == ["evaluate-0", "train-1"]


def test_a_grpo_runs_judge_stage_is_refused_by_name_rather_than_run():
    import pytest

    from selftaught.errors import InvalidInput
    from selftaught.stage_process import stage_of

    run = parse_run({**MINIMAL, "spec": {**MINIMAL["spec"], "train": {"method": "grpo"}}})
    assert stage_of(run, "train", 1) == StageRef("train", 1)
    with pytest.raises(InvalidInput, match="judge-1: a train.method grpo run has no judge stage"):
        stage_of(run, "judge", 1)
