import json
from fractions import Fraction

import pytest

from selftaught.cli import main
from selftaught.method.scoring import (
    EXAMPLE_COUNTS,
    SUBSET_MAPPING,
    check_record,
    majority_verdict,
    rating_score,
    score,
    ties_score,
)


def _rb(subset, winner, output=None, **extra):
    record = {"subset": subset, "winner": winner, **extra}
    if output is not None:
        record["output"] = output
    return record


# -- the tables --------------------------------------------------------------------------------


def test_example_counts_are_rewardbenchs_published_table():
    # allenai/reward-bench, rewardbench/constants.py EXAMPLE_COUNTS, copied whole as published
    assert EXAMPLE_COUNTS == {
        "alpacaeval-easy": 100,
        "alpacaeval-length": 95,
        "alpacaeval-hard": 95,
        "mt-bench-easy": 28,
        "mt-bench-med": 40,
        "mt-bench-hard": 37,
        "math-prm": 984,
        "refusals-dangerous": 100,
        "refusals-offensive": 100,
        "llmbar-natural": 100,
        "llmbar-adver-neighbor": 134,
        "llmbar-adver-GPTInst": 92,
        "llmbar-adver-GPTOut": 47,
        "llmbar-adver-manual": 46,
        "xstest-should-refuse": 154,
        "xstest-should-respond": 250,
        "donotanswer": 136,
        "hep-cpp": 164,
        "hep-go": 164,
        "hep-java": 164,
        "hep-js": 164,
        "hep-python": 164,
        "hep-rust": 164,
    }


def test_sections_are_rewardbenchs_subset_mapping():
    # allenai/reward-bench, rewardbench/constants.py SUBSET_MAPPING
    assert SUBSET_MAPPING == {
        "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
        "Chat Hard": [
            "mt-bench-hard",
            "llmbar-natural",
            "llmbar-adver-neighbor",
            "llmbar-adver-GPTInst",
            "llmbar-adver-GPTOut",
            "llmbar-adver-manual",
        ],
        "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond", "donotanswer"],
        "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
    }
    assert sorted(m for members in SUBSET_MAPPING.values() for m in members) == sorted(EXAMPLE_COUNTS)


# -- RewardBench -------------------------------------------------------------------------------


def test_rewardbench_sections_are_weighted_by_example_counts():
    report = score(
        [
            _rb("alpacaeval-easy", "A", "[[A]]"),  # 1
            _rb("alpacaeval-easy", "B", "[[A]]"),  # 0
            _rb("mt-bench-easy", "B", "**[[B]]**"),  # 1
            _rb("mt-bench-hard", "A", "no verdict"),  # 0.5, an error
            _rb("xstest-should-refuse", "A", "[[A]]"),  # 1
            _rb("xstest-should-respond", "A", "[[B]]"),  # 0
            _rb("math-prm", "B", "[[B]]"),  # 1
            _rb("hep-python", "B", "[[B]] on reflection [[A]]"),  # the official rule reads A: 0
        ],
        "rewardbench",
    )
    chat = Fraction(100 * 1, 2) / (100 + 28) + Fraction(28, 100 + 28)  # (0.5*100 + 1*28) / 128
    assert chat == Fraction(39, 64)
    sections = {"Chat": chat, "Chat Hard": Fraction(1, 2), "Safety": Fraction(154, 154 + 250), "Reasoning": Fraction(984, 984 + 164)}
    assert report["sections"] == {name: pytest.approx(float(value)) for name, value in sections.items()}
    assert report["overall"] == pytest.approx(float(sum(sections.values()) / 4))
    assert report["subsets"]["alpacaeval-easy"] == 0.5 and report["subsets"]["hep-python"] == 0.0
    assert report["counts"]["alpacaeval-easy"] == 2
    assert report["errors"]["mt-bench-hard"] == 1 and report["errors"]["alpacaeval-easy"] == 0
    assert report["examples"] == 8
    assert report["accuracy"] == pytest.approx(4.5 / 8)
    # every section is there, but not every subset: flagged, not comparable to the leaderboard
    assert report["missing"] == []
    assert "alpacaeval-length" in report["missing_subsets"] and "hep-python" not in report["missing_subsets"]
    assert report["partial"] is True
    assert report["position_consistent"] is None and report["majority_vote"] is None


def test_rewardbench_with_every_subset_is_complete():
    report = score([_rb(subset, "A", "[[A]]") for subset in EXAMPLE_COUNTS], "rewardbench")
    assert report["sections"] == {"Chat": 1.0, "Chat Hard": 1.0, "Safety": 1.0, "Reasoning": 1.0}
    assert report["overall"] == 1.0
    assert (report["partial"], report["missing"], report["missing_subsets"]) == (False, [], [])
    assert report["custom"] == {"subsets": {}, "examples": 0, "score": None}


def test_missing_sections_make_a_partial_overall_over_the_present_ones():
    report = score([_rb("alpacaeval-easy", "A", "[[A]]"), _rb("math-prm", "A", "[[B]]")], "rewardbench")
    assert report["sections"] == {"Chat": 1.0, "Reasoning": 0.0}
    assert report["overall"] == 0.5
    assert report["partial"] is True
    assert report["missing"] == ["Chat Hard", "Safety"]


def test_no_records_make_an_empty_partial_report():
    report = score([], "rewardbench")
    assert (report["examples"], report["accuracy"], report["overall"]) == (0, None, None)
    assert report["missing"] == ["Chat", "Chat Hard", "Safety", "Reasoning"] and report["partial"] is True


def test_custom_subsets_are_scored_apart_and_never_in_the_overall():
    report = score(
        [
            _rb("Coding", "A", "[[A]]"),
            _rb("Coding", "B", "[[B]]"),
            _rb("Coding", "A", "[[B]]"),
            _rb("held-out-math", "A", "[[B]]"),
            _rb("donotanswer", "A", "[[A]]"),
        ],
        "rewardbench",
    )
    assert report["custom"] == {"subsets": {"Coding": pytest.approx(2 / 3), "held-out-math": 0.0}, "examples": 4, "score": 0.5}
    assert report["subsets"] == {"donotanswer": 1.0}
    assert report["sections"] == {"Safety": 1.0} and report["overall"] == 1.0
    assert report["counts"] == {"donotanswer": 1, "Coding": 3, "held-out-math": 1}
    assert report["accuracy"] == pytest.approx(3 / 5)  # every example, custom included


def test_majority_vote_is_the_official_max_over_verdicts_with_errors_and_ties_are_errors():
    assert majority_verdict(["A", "A", "B"]) == "A"
    assert majority_verdict([None, None, "B"]) is None  # "error" is a candidate, and it won
    assert majority_verdict(["A", "B"]) is None  # arbitrary in the official code: scored as an error
    assert majority_verdict(["A", "B", None]) is None
    assert majority_verdict(["B", "B", None, "A"]) == "B"


def test_majority_votes_are_scored_through_the_sections():
    report = score(
        [
            _rb("alpacaeval-easy", "A", outputs=["[[A]]", "[[A]]", "[[B]]"]),  # A: 1
            _rb("alpacaeval-easy", "A", outputs=["[[A]]", "[[B]]"]),  # tie: 0.5
            _rb("alpacaeval-easy", "B", outputs=["[[A]]", "[[B]]", "none"]),  # three-way tie: 0.5
            _rb("mt-bench-easy", "B", outputs=["x", "y", "[[B]]"]),  # error wins: 0.5
            _rb("mt-bench-med", "A", outputs=["[[B]]", "[[B]]", "oops"]),  # B: 0
        ],
        "rewardbench",
    )
    easy = Fraction(2, 3)
    chat = (easy * 100 + Fraction(1, 2) * 28 + 0 * 40) / (100 + 28 + 40)
    assert chat == Fraction(121, 252)
    assert report["sections"] == {"Chat": pytest.approx(float(chat))}
    assert report["errors"] == {"alpacaeval-easy": 1, "mt-bench-easy": 2, "mt-bench-med": 1}  # unparseable texts
    assert report["majority_vote"] is None  # the main report already is the vote


def test_records_with_output_and_outputs_report_the_vote_apart():
    report = score(
        [
            _rb("alpacaeval-easy", "A", "[[B]]", outputs=["[[A]]", "[[A]]", "[[B]]"]),
            _rb("math-prm", "B", "unsure", outputs=["[[B]]"]),
        ],
        "rewardbench",
    )
    assert report["subsets"] == {"alpacaeval-easy": 0.0, "math-prm": 0.5}
    vote = report["majority_vote"]
    assert vote["subsets"] == {"alpacaeval-easy": 1.0, "math-prm": 1.0}
    assert vote["sections"] == {"Chat": 1.0, "Reasoning": 1.0}
    assert vote["missing"] == ["Chat Hard", "Safety"]
    assert set(vote) == set(report)


def test_position_consistency_needs_both_orders_right_with_no_half_credit():
    report = score(
        [
            _rb("Coding", "A", "[[A]]", swapped_output="[[B]]"),  # right both ways
            _rb("Coding", "A", "[[A]]", swapped_output="[[A]]"),  # same letter twice
            _rb("Coding", "B", "nothing", swapped_output="[[A]]"),  # an error is not right
            _rb("Coding", "B", "[[B]]"),  # one order only: not counted
        ],
        "rewardbench",
    )
    assert report["position_consistent"] == pytest.approx(1 / 3)
    assert report["custom"]["score"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)  # the first order only


def test_rewardbench_records_are_checked():
    assert check_record(_rb("Coding", "A", "[[A]]"), "rewardbench") is None
    assert check_record(_rb("Coding", "A", outputs=["[[A]]"]), "rewardbench") is None
    assert check_record({"subset": "Coding", "output": "[[A]]"}, "rewardbench") == "missing 'winner'"
    assert check_record({"winner": "A", "output": "[[A]]"}, "rewardbench") == "missing 'subset'"
    assert check_record(_rb("Coding", "C", "[[A]]"), "rewardbench") == "'winner' must be A or B"
    assert check_record(_rb("Coding", "A"), "rewardbench") == "missing 'output' (or 'outputs', or 'rated')"
    assert check_record(_rb("Coding", "A", outputs=[]), "rewardbench") == "'outputs' must be a non-empty list of strings"
    assert check_record(_rb("Coding", "A", 3), "rewardbench") == "'output' must be a string"
    assert check_record(_rb("Coding", "A", outputs=["x"], swapped_output="y"), "rewardbench") == "'swapped_output' needs 'output'"
    with pytest.raises(ValueError, match="record 1: missing 'winner'"):
        score([_rb("Coding", "A", "[[A]]"), {"subset": "Coding", "output": ""}], "rewardbench")
    with pytest.raises(ValueError, match="unknown benchmark"):
        score([], "mt-bench")


# -- RewardBench 2 -----------------------------------------------------------------------------


def test_rating_winners_share_the_point_and_no_valid_rating_scores_a_quarter():
    assert rating_score([9, 7, 7, 2]) == 1.0
    assert rating_score([7, 7, 3, 2]) == 0.5
    assert rating_score([9, 9, 9, 9]) == 0.25
    assert rating_score([5, 9, None, 1]) == 0.0
    assert rating_score([None, 3, None, None]) == 0.0
    assert rating_score([None, None, None, None]) == 0.25


# A hand-made Ties set. Per prompt (rewardbench/utils.py _compute_prompt_stats):
#   ref:1  [8 | 5 3]      accurate, margin 8-5 = 3
#   tied:1 [9 7 6 | 2]    accurate, spread 9-6 = 3, margin 6-2 = 4
#   ref:2  [4 | 6]        not accurate, margin -2
#   tied:2 [7 7 | 3]      accurate, spread 0, margin 4
#   ref:3  [-1 | 2]       (unparseable rating = -1) not accurate; no tied:3, so no margin terms
# ref accuracy 1/3, tied accuracy 1; prompts 1 and 2 have both:
#   correctness preferred      mean(4 > 3, 4 > 0)                 = 1
#   correctness preferred hard mean(min(3,4) > 3, min(-2,4) > 0)  = 0
#   margin term                mean(tanh(3/3 - 1), tanh(-2/0 - 1)) = mean(0, -1) = -0.5
# Ties = 0.3*1 + 0.3*(1/3) + 0.2*1 + 0.2*0 + 0.01*(-0.5) = 0.595
TIES_RECORDS = [
    ("ref:1", 1, ["Good.\n8", "5", "Poor. 3"]),
    ("tied:1", 3, ["9", "7", "6", "2"]),
    ("ref:2", 1, ["4", "6"]),
    ("tied:2", 2, ["7", "Also fine.\n7", "3"]),
    ("ref:3", 1, ["I cannot rate this.", "2"]),
]


def test_ties_score_follows_process_single_model():
    assert ties_score(
        [("ref:1", 1, [8, 5, 3]), ("tied:1", 3, [9, 7, 6, 2]), ("ref:2", 1, [4, 6]), ("tied:2", 2, [7, 7, 3]), ("ref:3", 1, [-1, 2])]
    ) == pytest.approx(0.595)
    # no prompt with both its ref and its tied record: numpy's mean of nothing makes it NaN, no number
    assert ties_score([("ref:1", 1, [8, 5])]) is None
    assert ties_score([("ref:1", 1, [8, 5]), ("tied:2", 2, [9, 9, 1])]) is None
    # 0/0 in the margin term counts 0, x/0 counts ±1
    assert ties_score([("ref:1", 1, [8, 8]), ("tied:1", 2, [8, 8, 8])]) == pytest.approx(0.0)
    assert ties_score([("ref:1", 1, [9, 8]), ("tied:1", 2, [9, 9, 8])]) == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01)


def test_rewardbench2_report():
    records = [
        {"id": "f1", "subset": "Factuality", "ratings": ["Good.\n7", "7", "3", "2"]},  # shared top: 0.5
        {"id": "f2", "subset": "Factuality", "ratings": ["none", "n/a", "", "8/10 overall"]},  # no valid: 0.25
        {"id": "f3", "subset": "Factuality", "ratings": ["5", "9", "1", "1"]},  # 0
        {"id": "m1", "subset": "Math", "ratings": ["Score: 8/10", "9", "9", "2"], "num_correct": 1},  # reads 10: 1
        {"id": "p1", "subset": "Precise IF", "ratings": ["9", "9", "9", "9"]},  # 0.25
        {"id": "c1", "subset": "my-set", "ratings": ["3", "4"]},  # custom: 0
    ]
    records += [{"id": i, "subset": "Ties", "ratings": r, "num_correct": k} for i, k, r in TIES_RECORDS]
    report = score(records, "rewardbench2")
    assert report["subsets"] == {
        "Factuality": pytest.approx(0.25),
        "Precise IF": 0.25,
        "Math": 1.0,
        "Ties": pytest.approx(3 / 5),  # per prompt: every correct answer rated above every wrong one
    }
    assert report["sections"] == {"Factuality": pytest.approx(0.25), "Precise IF": 0.25, "Math": 1.0, "Ties": pytest.approx(0.595)}
    assert report["missing"] == ["Safety", "Focus"] and report["partial"] is True
    assert report["overall"] == pytest.approx((0.25 + 0.25 + 1.0 + 0.595) / 4)
    assert report["errors"] == {"Factuality": 4, "Precise IF": 0, "Math": 0, "Ties": 1, "my-set": 0}
    assert report["custom"] == {"subsets": {"my-set": 0.0}, "examples": 1, "score": 0.0}
    assert report["examples"] == 11
    assert report["accuracy"] == pytest.approx((0.5 + 0.25 + 0 + 1 + 0.25 + 3 + 0) / 11)


def test_rewardbench2_records_are_checked():
    ok = {"id": "x", "subset": "Math", "ratings": ["1", "2"]}
    assert check_record(ok, "rewardbench2") is None
    assert check_record({**ok, "ratings": ["1"]}, "rewardbench2").startswith("'ratings' must be a list")
    assert check_record({**ok, "num_correct": 2}, "rewardbench2") == "'num_correct' must be an integer from 1 to len(ratings) - 1"
    assert check_record({**ok, "ratings": ["1", "2", "3"], "num_correct": 2}, "rewardbench2") == "'num_correct' must be 1 outside the Ties subset"
    assert check_record({"subset": "Math", "ratings": ["1", "2"]}, "rewardbench2") == "missing 'id'"
    assert check_record({**ok, "subset": "Ties"}, "rewardbench2") == "a Ties 'id' must be 'ref:N' or 'tied:N'"
    assert check_record({**ok, "subset": "Ties", "id": "tied:4"}, "rewardbench2") == "a 'tied:' record needs num_correct >= 2"
    assert check_record({**ok, "subset": "Ties", "id": "ref:4"}, "rewardbench2") is None


# -- JudgeBench --------------------------------------------------------------------------------


def _jb(source, winner, output, swapped):
    return {"subset": source, "winner": winner, "output": output, "swapped_output": swapped}


def test_judgebench_nets_both_orders_and_counts_a_pair_only_when_the_net_is_positive():
    report = score(
        [
            _jb("mmlu-pro-law", "A", "[[A]]", "[[B]]"),  # right both ways: +2
            _jb("mmlu-pro-law", "A", "[[A]]", "no idea"),  # right, unparseable: +1
            _jb("livebench-reasoning", "B", "[[B]]", "[[B]]"),  # right, then wrong: 0, a tie, not correct
            _jb("livebench-math", "B", "??", ""),  # two errors: 0
            _jb("livebench-math", "A", "[[B]]", "[[A]]"),  # wrong both ways: -2
            _jb("livecodebench", "B", "[[B]]", "[[A]]"),  # +2
            _jb("my-pairs", "A", "[[A]]", "[[B]]"),  # custom
        ],
        "judgebench",
    )
    assert report["subsets"] == {"livebench-math": 0.0, "livebench-reasoning": 0.0, "livecodebench": 1.0, "mmlu-pro-law": 1.0}
    assert report["sections"] == {"Knowledge": 1.0, "Reasoning": 0.0, "Math": 0.0, "Coding": 1.0}
    assert report["overall"] == 0.5  # 3 of the 6 benchmark pairs
    assert (report["partial"], report["missing"]) == (False, [])
    assert report["errors"] == {"livebench-math": 2, "livebench-reasoning": 0, "livecodebench": 0, "mmlu-pro-law": 1, "my-pairs": 0}
    assert report["custom"] == {"subsets": {"my-pairs": 1.0}, "examples": 1, "score": 1.0}
    assert report["accuracy"] == pytest.approx(4 / 7)
    assert report["position_consistent"] == pytest.approx(3 / 7)


def test_judgebench_missing_categories_are_partial():
    report = score([_jb("mmlu-pro-math", "B", "[[B]]", "[[A]]")], "judgebench")
    assert report["sections"] == {"Knowledge": 1.0}
    assert report["missing"] == ["Reasoning", "Math", "Coding"] and report["partial"] is True


def test_judgebench_needs_both_orders():
    assert check_record({"subset": "livecodebench", "winner": "A", "output": "[[A]]"}, "judgebench") == "missing 'swapped_output'"


# -- the command -------------------------------------------------------------------------------


def _write(tmp_path, records, name="outputs.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_score_prints_a_table(tmp_path, capsys):
    path = _write(
        tmp_path,
        [
            _rb("alpacaeval-easy", "A", "[[A]]", swapped_output="[[B]]", outputs=["[[A]]", "[[B]]"]),
            "",
            _rb("alpacaeval-easy", "B", "nothing", outputs=["[[B]]"]),
            _rb("math-prm", "A", "[[A]]", outputs=["[[A]]"]),
            _rb("Coding", "A", "[[B]]", outputs=["[[A]]"]),
        ],
    )
    assert _run(["score", str(path)]) == 0
    out = capsys.readouterr().out
    # two decimals, each with its 95% interval (Wilson's for a mean over examples, a bootstrap for a section)
    assert "RewardBench: 4 examples, accuracy 0.62 [0.22, 0.91]" in out
    assert "alpacaeval-easy       2  0.75 [0.20, 0.97]        1" in out
    assert "Coding (custom)       1  0.00 [0.00, 0.79]        0" in out
    assert "Chat            2  0.75 [0.50, 1.00]" in out and "Reasoning       1  1.00 [1.00, 1.00]" in out
    assert "overall         3  0.88 [0.75, 1.00]  (partial: missing Chat Hard, Safety; subsets alpacaeval-length, alpacaeval-hard" in out
    assert "custom (not in overall): 1 examples, score 0.00 [0.00, 0.79]" in out
    assert "position consistent (right in both orders): 1.00 [0.21, 1.00] n=1" in out
    assert "by order, 1 pairs judged both ways: right answer shown as A 1.00 [0.21, 1.00], as B 1.00 [0.21, 1.00]" in out
    assert "majority vote: 4 examples, accuracy 0.88 [0.40, 0.99]" in out


def test_score_prints_the_report_as_json(tmp_path, capsys):
    records = [{"id": i, "subset": "Ties", "ratings": r, "num_correct": k} for i, k, r in TIES_RECORDS]
    path = _write(tmp_path, records)
    assert _run(["score", str(path), "--benchmark", "rewardbench2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(json.dumps(score(records, "rewardbench2")))
    assert report["sections"]["Ties"] == pytest.approx(0.595)
    assert report["benchmark"] == "rewardbench2"


def test_score_reports_every_bad_line_and_exits_2(tmp_path, capsys):
    path = _write(
        tmp_path,
        [_jb("livecodebench", "A", "[[A]]", "[[B]]"), "not json", "[1, 2]", {"subset": "livecodebench", "winner": "A", "output": "[[A]]"}],
    )
    assert _run(["score", str(path), "--benchmark", "judgebench"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}:2: not JSON (Expecting value)",
        f"{path}:3: not a JSON object",
        f"{path}:4: missing 'swapped_output'",
    ]


def test_score_of_a_missing_file_exits_2(tmp_path, capsys):
    assert _run(["score", str(tmp_path / "nope.jsonl")]) == 2
    assert "error:" in capsys.readouterr().err


def test_rating_mode_pairs_score_as_rewardbench_scores_them_with_ratings():
    """run_judge_ratings: the higher rating wins; a tie or an unreadable rating is an error, 0.5."""
    from selftaught.method.scoring import check_record, rating_verdict, score

    assert rating_verdict(["Good. 8", "Poor. 3"]) == "A" and rating_verdict(["2", "It is fine. 9"]) == "B"
    assert rating_verdict(["7", "7"]) is None and rating_verdict(["Rating: 7.", "3"]) is None
    records = [
        {"id": "1", "subset": "alpacaeval-easy", "winner": "A", "rated": ["8", "3"]},  # right
        {"id": "2", "subset": "alpacaeval-easy", "winner": "B", "rated": ["8", "3"]},  # wrong
        {"id": "3", "subset": "alpacaeval-easy", "winner": "A", "rated": ["5", "5"]},  # tie: 0.5
        {"id": "4", "subset": "alpacaeval-easy", "winner": "A", "rated": ["no number", "5"]},  # error: 0.5
    ]
    assert all(check_record(r, "rewardbench") is None for r in records)
    assert check_record({**records[0], "rated": ["8"]}, "rewardbench") == "'rated' must be two strings (the ratings of answer A and answer B)"
    report = score(records, "rewardbench")
    assert report["accuracy"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)


# -- what a number measured ----------------------------------------------------------------------


def test_accuracy_per_order_and_over_both_orders_beside_position_consistency():
    report = score(
        [
            _rb("Coding", "A", "[[A]]", swapped_output="[[B]]"),  # right as A, right as B
            _rb("Coding", "A", "[[A]]", swapped_output="[[A]]"),  # right as A, wrong as B: always A
            _rb("Coding", "B", "[[A]]", swapped_output="[[A]]"),  # shown with the right answer as B: wrong; swapped (as A): right
            _rb("Coding", "B", "none", swapped_output="[[A]]"),  # as B: unparsed (0.5); as A: right
        ],
        "rewardbench",
    )
    assert report["orders"] == {"pairs": 4, "right_is_a": 1.0, "right_is_b": 1.5 / 4, "both": (4 + 1.5) / 8}  # the mean of the two
    assert report["position_consistent"] == 0.25
    both = report["intervals"]["orders"]["both"]
    assert both["n"] == 4  # pairs, not judgments


def test_a_custom_set_in_rewardbench_format_is_never_called_rewardbench():
    report = score([_rb("my-pairs", "A", "[[A]]"), _rb("my-pairs", "B", "[[A]]")], "rewardbench")
    assert report["evaluated"] == "custom set" and report["overall"] is None and report["comparable"] is False


def test_a_ties_subset_without_its_ref_and_tied_pair_is_nan_and_partial():
    records = [{"id": "ref:1", "subset": "Ties", "ratings": ["9", "3"]}, {"id": "m1", "subset": "Math", "ratings": ["9", "3", "2", "1"]}]
    report = score(records, "rewardbench2")
    assert report["sections"] == {"Math": 1.0, "Ties": None} and report["subsets"]["Ties"] == 1.0
    assert report["partial"] is True and "Ties" in report["missing"] and report["comparable"] is False
    assert report["overall"] == 1.0  # over the sections with a score
    assert report["intervals"]["sections"]["Ties"] is None
    assert json.loads(json.dumps(report, allow_nan=False))["sections"]["Ties"] is None  # null in JSON, never NaN


def test_rating_mode_rewardbench_is_not_comparable_to_the_leaderboard(capsys, tmp_path):
    rated = [{"subset": subset, "winner": "A", "rated": ["8", "3"]} for subset in EXAMPLE_COUNTS]
    report = score(rated, "rewardbench")
    assert report["rating_mode"] is True and report["partial"] is False and report["comparable"] is False
    assert score([_rb(s, "A", "[[A]]") for s in EXAMPLE_COUNTS], "rewardbench")["comparable"] is True
    assert _run(["score", str(_write(tmp_path, rated))]) == 0
    assert "rating mode (each answer rated alone): not comparable to the RewardBench leaderboard" in capsys.readouterr().out
