"""Stage keys: a change to a field a stage reads changes the key of exactly that stage and of the
stages after it, for every stage of the table; where or how a run runs changes none."""

from __future__ import annotations

from typing import Any

import pytest

from selftaught.api.load import parse_run
from selftaught.pipeline.lineage import Identities, stage_keys
from selftaught.pipeline.planner import stage_graph
from selftaught.pipeline.table import STAGES, StageRef

IDENTITIES = Identities(instructions="objects aaa", evaluation="none", seed="files bbb", generator="files bbb")


def _spec(**override: Any):
    spec: dict[str, Any] = {
        "models": {"seed": {"source": "org/seed-judge"}},
        "data": {"instructions": {"source": "/data/instructions.jsonl"}},
        "storage": {"uri": "/runs"},
        "iterations": 2,
    }
    for section, value in override.items():
        spec[section] = {**spec.get(section, {}), **value} if isinstance(value, dict) else value
    document = {"apiVersion": "selftaught.dev/v1alpha1", "kind": "SelfTaughtRun", "metadata": {"name": "r"}, "spec": spec}
    return parse_run(document).spec


def _after(spec, name: str) -> set[StageRef]:
    """The stages called `name`, and every stage that reads one of them, directly or not."""
    graph = stage_graph(spec)
    found = {node.ref for node in graph if node.ref.name == name}
    for node in graph:  # in execution order: a stage's needs come first
        if found & set(node.needs):
            found.add(node.ref)
    return found


#: per stage of the table, an edit of a field only it reads first
EDITS: dict[str, dict[str, Any]] = {
    "categorize": {"categorize": {"maxTokens": 300}},
    "select": {"select": {"minComplexity": 3}},
    "pairs": {"pairs": {"temperature": 0.5}},
    "judge": {"judge": {"samples": 6}},
    "train": {"train": {"learningRate": 2e-4}},
    "evaluate": {"evaluate": {"maxTokens": 300}},
}


def test_every_stage_of_the_table_has_an_edit_here():
    assert set(EDITS) == {info.name for info in STAGES}


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edit_of_a_field_a_stage_reads_changes_that_stage_and_the_ones_after_it_only(name):
    before = stage_keys(_spec(), IDENTITIES)
    edited = _spec(**EDITS[name])
    after = stage_keys(edited, IDENTITIES)
    changed = {ref for ref in before if before[ref] != after[ref]}
    assert changed == _after(edited, name)
    # every stage reads categorize's output; after any other stage, some stage keeps its key
    assert changed == set(before) if name == "categorize" else changed and changed != set(before)


def test_where_and_how_a_run_runs_changes_no_key():
    before = stage_keys(_spec(), IDENTITIES)
    moved = _spec(
        storage={"uri": "s3://elsewhere/runs"}, generation={"batchSize": 7, "parallelism": 3}, retries={"perStage": 5},
        scheduling={"generation": {"nodeSelector": {"pool": "spot"}}}, reuse={"enabled": True}, iterations=3,
    )  # fmt: skip
    after = stage_keys(moved, IDENTITIES)
    assert {ref: after[ref] for ref in before} == before  # a longer run adds stages; the ones both have keep their keys


def test_the_data_and_the_models_count_by_identity_where_they_are_read():
    keys = stage_keys(_spec(), IDENTITIES)
    other_data = stage_keys(_spec(), Identities("objects ccc", "none", "files bbb", "files bbb"))
    assert all(keys[ref] != other_data[ref] for ref in keys)  # categorize reads it: everything after it changes
    # a generator of its own: another seed keeps categorize, select and pairs, and changes what it judges and trains
    apart = Identities("objects aaa", "none", "files bbb", "files ggg")
    other_seed = stage_keys(_spec(), Identities("objects aaa", "none", "files zzz", "files ggg"))
    same_generator = stage_keys(_spec(), apart)
    unchanged = {ref.label for ref in keys if same_generator[ref] == other_seed[ref]}
    assert unchanged == {"categorize", "select", "pairs"}


def test_a_stage_code_version_bump_changes_that_stage_and_the_ones_after_it(monkeypatch):
    from dataclasses import replace

    from selftaught.pipeline import table

    before = stage_keys(_spec(), IDENTITIES)
    bumped = replace(table.BY_NAME["pairs"], version=2)
    monkeypatch.setitem(table.BY_NAME, "pairs", bumped)
    after = stage_keys(_spec(), IDENTITIES)
    assert {ref for ref in before if before[ref] != after[ref]} == _after(_spec(), "pairs")
