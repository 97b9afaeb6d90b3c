from pathlib import Path

import pytest

from selftaught.api.load import SpecError, load_run, parse_run

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {
    "apiVersion": "selftaught.dev/v1alpha1",
    "kind": "SelfTaughtRun",
    "metadata": {"name": "r1"},
    "spec": {
        "models": {"seed": {"source": "meta-llama/Meta-Llama-3-70B-Instruct"}},
        "data": {"instructions": {"source": "s3://bucket/wildchat.jsonl"}},
        "storage": {"uri": "s3://bucket/runs"},
    },
}


def _with(**spec):
    return {**MINIMAL, "spec": {**MINIMAL["spec"], **spec}}


def test_the_quickstart_example_is_a_valid_run():
    run = load_run(REPO / "examples/local-quickstart.yaml")
    assert run.metadata.name == "quickstart" and run.spec.iterations == 2


def test_defaults_are_the_papers():
    spec = parse_run(MINIMAL).spec
    assert spec.iterations == 5
    assert (spec.judge.samples, spec.judge.temperature, spec.judge.top_p) == (15, 0.7, 0.9)
    assert spec.train.init_from == "seed" and spec.train.learning_rate == 1e-6
    assert (spec.train.warmup_steps, spec.train.min_lr_ratio, spec.train.epochs) == (100, 0.2, 2.0)
    assert spec.select.categories == ["Knowledge and Reasoning", "Mathematical reasoning"]
    assert spec.generator_model.source == spec.models.seed.source


def test_a_value_out_of_bounds_names_the_field():
    with pytest.raises(SpecError, match=r"spec\.judge\.samples: Input should be less than or equal to 256"):
        parse_run(_with(judge={"samples": 1000}))


def test_a_misspelt_field_is_refused_by_name():
    with pytest.raises(SpecError, match=r"spec\.judge\.sample: Extra inputs are not permitted"):
        parse_run(_with(judge={"sample": 4}))


def test_an_unknown_category_is_refused_with_the_known_ones():
    with pytest.raises(SpecError, match=r"spec\.select\.categories: .*unknown categories \['Poetry'\]"):
        parse_run(_with(select={"categories": ["Poetry"]}))


def test_a_missing_required_field_and_a_bad_name_are_reported_together():
    document = {**MINIMAL, "metadata": {"name": "Not_A_DNS_Name"}, "spec": {"storage": {"uri": "x"}}}
    with pytest.raises(SpecError) as error:
        parse_run(document)
    message = str(error.value)
    assert "metadata.name" in message and "spec.models: Field required" in message and "spec.data: Field required" in message


def test_unreadable_or_invalid_files_say_which_file(tmp_path):
    with pytest.raises(SpecError, match="missing.yaml: cannot read"):
        load_run(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load_run(bad)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\n")
    with pytest.raises(SpecError, match="other.yaml: expected exactly one SelfTaughtRun document, found 0"):
        load_run(other)
