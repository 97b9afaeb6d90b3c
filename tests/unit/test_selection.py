import random

from selftaught.api.spec import Select
from selftaught.method.selection import normalise, select


def _record(i, category="Knowledge and Reasoning", complexity=5, text=None):
    return {"id": f"r{i}", "instruction": text or f"question number {i}", "category": category, "complexity": complexity}


def test_only_chosen_categories_above_the_complexity_floor_are_kept_and_the_rest_counted():
    records = [
        _record(1),
        _record(2, category="Coding"),
        _record(3, complexity=1),
        {"id": "r4", "instruction": "x", "category": None},
    ]
    kept, counts = select(records, Select(min_complexity=2), seed=0)
    assert [r["id"] for r in kept] == ["r1"]
    assert counts["other_category"] == 1 and counts["too_simple"] == 1 and counts["uncategorized"] == 1


def test_duplicates_are_found_on_normalised_text():
    assert normalise("Why is the SKY blue?!") == normalise("why is the   sky blue")
    records = [_record(1, text="Why is the sky blue?"), _record(2, text="why is the sky  BLUE")]
    for spec in (Select(), Select(per_category_cap=5)):
        kept, counts = select(records, spec, seed=0)
        assert len(kept) == 1 and counts["duplicates"] == 1


def test_per_category_caps_balance_the_subset_and_the_total_cap_keeps_the_balance():
    records = [_record(i) for i in range(50)] + [_record(100 + i, "Mathematical reasoning") for i in range(5)]
    kept, _ = select(records, Select(per_category_cap=10), seed=1)
    by_category = {c: sum(r["category"] == c for r in kept) for c in ("Knowledge and Reasoning", "Mathematical reasoning")}
    assert by_category == {"Knowledge and Reasoning": 10, "Mathematical reasoning": 5}
    kept, counts = select(records, Select(per_category_cap=10, total_cap=6), seed=1)
    assert sum(r["category"] == "Mathematical reasoning" for r in kept) == 3
    assert len(kept) == 6 and counts["kept"] == 6


def test_selection_is_deterministic_under_a_seed_and_independent_of_input_order():
    records = [_record(i) for i in range(200)]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    spec = Select(per_category_cap=20)
    first = [r["id"] for r in select(records, spec, seed=3)[0]]
    assert first == [r["id"] for r in select(shuffled, spec, seed=3)[0]]
    assert first != [r["id"] for r in select(records, spec, seed=4)[0]]


def test_uncapped_selection_with_a_total_cap_keeps_exactly_the_cap():
    kept, _ = select([_record(i) for i in range(30)], Select(total_cap=7), seed=0)
    assert len(kept) == 7
