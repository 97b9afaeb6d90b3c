"""benchmarks/recipes.py, the one command behind docs/testbed.md's recipe tables: each recipe on
each world is a valid run, and the table says mean ± spread per iteration and wall time."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("recipes", REPO / "benchmarks" / "recipes.py")
recipes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipes)


@pytest.mark.parametrize("world", sorted(recipes.WORLDS))
def test_every_recipe_is_a_valid_run_on_each_world_or_refused_with_the_reason(world, tmp_path):
    from selftaught.api.load import parse_run

    for recipe in recipes.RECIPES:
        why = recipes.refusal(recipe, world)
        assert why is None, why
        run = parse_run(recipes.run_document(recipe, 2, tmp_path, world))
        assert run.spec.seed == 2 and run.spec.train.seed == 2
        assert run.spec.iterations == (4 if world.startswith("hard") else 3)
        assert run.spec.models.seed.source.endswith({"easy": "/testbed/seed", "hard": "/testbed-hard/seed", "hard-rated": "/testbed-hard-rated/seed"}[world])


def test_the_table_gives_mean_and_spread_per_iteration_and_wall_time():
    runs = [
        {"accuracy": [0.4, 0.6], "judge_tokens": 100.0, "fixed_n_tokens": 200.0, "seconds": 300.0},
        {"accuracy": [0.5, 0.8], "judge_tokens": 300.0, "fixed_n_tokens": 400.0, "seconds": 100.0},
    ]
    head, _, row = recipes.table({"paper": runs}).splitlines()
    assert head.split(" | ")[-1] == "wall time |"
    assert row == "| paper | 2 | 0.450 ± 0.071 | 0.700 ± 0.141 | 0.250 ± 0.071 (+0.200) | 200 | 0.62× | 200 s |"


def test_a_sweep_point_changes_one_field_of_every_run_and_is_kept_apart(tmp_path):
    from selftaught.api.load import parse_run

    settings = ["train.grpo.learningRate=3e-4", "train.grpo.steps=100"]
    assert recipes.setting(settings[0]) == {"train": {"grpo": {"learningRate": 3e-4}}}  # YAML 1.1 reads 3e-4 as text
    document = recipes.run_document("grpo", 1, tmp_path, "hard", settings)
    run = parse_run(document)
    assert (run.spec.train.grpo.learning_rate, run.spec.train.grpo.steps, run.spec.train.method) == (3e-4, 100, "grpo")
    assert document["metadata"]["name"] == "grpo-learningrate-3e-4-steps-100-s1"  # a DNS label, apart from plain grpo-s1
    assert recipes.variant("grpo", settings) == "grpo[train.grpo.learningRate=3e-4,train.grpo.steps=100]"
    with pytest.raises(Exception, match="FIELD.PATH=VALUE"):
        recipes.setting("train.grpo.learningRate")


def test_two_invocations_writing_one_results_file_keep_each_others_runs(tmp_path):
    saved = tmp_path / "results.json"
    recipes.save(saved, "paper 0", {"accuracy": [0.5]})
    recipes.save(saved, "grpo 0", {"accuracy": [0.6]})  # another invocation: save reads the file again, it does not write its own old copy
    import json

    assert sorted(json.loads(saved.read_text())) == ["grpo 0", "paper 0"] and list(tmp_path.iterdir()) == [saved]
