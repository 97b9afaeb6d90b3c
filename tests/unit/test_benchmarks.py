"""The one table of benchmarks (`api/benchmarks.py`): every row is offered, read, scored and priced."""

import pytest

from selftaught.api.benchmarks import BENCHMARKS, HELD_OUT
from selftaught.api.spec import SelfTaughtRunSpec
from selftaught.cli import build_parser
from selftaught.method import scoring
from selftaught.stages.sources import READERS
from selftaught.views.estimate import estimate, inputs_for


def _spec(benchmark: str | None) -> SelfTaughtRunSpec:
    return SelfTaughtRunSpec.model_validate({
        "models": {"seed": {"source": "m-8B"}}, "data": {"instructions": {"source": "x"}, "evaluation": {"source": "e"} if benchmark else {}},
        "storage": {"uri": "s3://b"}, "iterations": 1, **({"evaluate": {"benchmark": benchmark}} if benchmark else {}),
        "estimate": {"instructions": 1000},
    })  # fmt: skip


def test_every_benchmark_has_a_reader_and_a_scorer_and_is_offered_by_the_command_line():
    assert set(READERS) == set(BENCHMARKS) == set(scoring.BENCHMARKS)
    for name in BENCHMARKS:
        assert build_parser().parse_args(["score", "outputs.jsonl", "--benchmark", name]).benchmark == name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["score", "outputs.jsonl", "--benchmark", "mt-bench"])


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_is_priced_from_its_row(name):
    spec = _spec(name)
    assert spec.evaluation_benchmark == name
    inputs = inputs_for(spec)
    assert inputs.evaluation_examples.value == BENCHMARKS[name].examples  # its usual size when the set cannot be counted
    evaluate = next(row for row in estimate(spec, inputs).rows if row.label == "evaluate-1")
    assert evaluate.generated_tokens > 0


def test_the_held_out_pairs_are_read_as_the_held_out_benchmark():
    assert _spec(None).evaluation_benchmark == HELD_OUT
