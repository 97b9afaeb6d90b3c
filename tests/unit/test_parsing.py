import pytest

from selftaught.method.parsing import (
    parse_categorization,
    parse_modified_pair,
    parse_rating,
    parse_rewardbench_verdict,
    parse_verdict,
)
from selftaught.method.prompts import MODIFIED_ANSWER_END, MODIFIED_ANSWER_START, MODIFIED_QUESTION_MARKER


def test_category_answer_in_the_template_format_is_read():
    parsed = parse_categorization("Category: Coding\nComplexity: 7\nLength: (c)")
    assert (parsed.category, parsed.complexity, parsed.length) == ("Coding", 7, "c")


def test_category_answer_tolerates_markdown_case_and_ampersands():
    parsed = parse_categorization("**Category:** knowledge & reasoning\n**Complexity:** 9\nLength: e")
    assert (parsed.category, parsed.complexity, parsed.length) == ("Knowledge and Reasoning", 9, "e")


def test_category_with_extra_words_maps_to_the_longest_known_name():
    assert parse_categorization("Category: Mathematical reasoning (algebra)\nComplexity: 4").category == "Mathematical reasoning"


def test_length_is_optional_but_category_and_complexity_are_not():
    assert parse_categorization("Category: Other\nComplexity: 3").length is None
    assert parse_categorization("Category: Other") is None
    assert parse_categorization("Complexity: 3") is None


def test_unknown_category_or_out_of_range_complexity_is_unparseable():
    assert parse_categorization("Category: Poetry slam\nComplexity: 3") is None
    assert parse_categorization("Category: Coding\nComplexity: 11") is None
    assert parse_categorization("I think this is about code.") is None


def _pair_text(modified="Write about cats instead", answer="Cats are small felines.", end=True):
    text = f"{MODIFIED_QUESTION_MARKER}\n{modified}\n\n{MODIFIED_ANSWER_START}\n{answer}\n"
    return text + (MODIFIED_ANSWER_END if end else "")


def test_modified_pair_is_read_between_the_markers():
    parsed = parse_modified_pair("Sure!\n" + _pair_text())
    assert parsed.modified_instruction == "Write about cats instead"
    assert parsed.response == "Cats are small felines."


def test_modified_pair_without_the_end_marker_keeps_the_whole_answer():
    assert parse_modified_pair(_pair_text(end=False)).response == "Cats are small felines."


def test_modified_pair_missing_a_marker_or_a_part_is_dropped():
    assert parse_modified_pair(_pair_text().replace(MODIFIED_ANSWER_START, "")) is None
    assert parse_modified_pair(_pair_text(modified="  ")) is None
    assert parse_modified_pair(_pair_text(answer="")) is None
    assert parse_modified_pair("no markers at all") is None


def test_verdict_is_a_or_b_and_anything_ambiguous_is_none():
    assert parse_verdict("A is more accurate. [[A]]") == "A"
    assert parse_verdict("Final verdict: [[B]]") == "B"
    assert parse_verdict("[[A]] ... no wait [[B]]") is None
    assert parse_verdict("It's a tie: [[C]]") is None
    assert parse_verdict("") is None


# The official RewardBench rule (rewardbench/generative.py `process_judgement`) against the strict
# training parser: same on clean outputs, different where the official rule is lenient.
@pytest.mark.parametrize(
    ("text", "official", "strict"),
    [
        ("Answer A is better. [[A]]", "A", "A"),
        ("Final verdict: [[B]]", "B", "B"),
        ("**[[A]]**", "A", "A"),  # markdown around the marker is fine for both
        ("Verdict:\n\n**[[B]]**.", "B", "B"),
        ("[[B]] ... on reflection [[A]]", "A", None),  # both markers: official takes A wherever it is
        ("[[A]] ... no wait [[B]]", "A", None),
        ("It's a tie: [[C]]", None, None),
        ("[[a]]", None, None),  # exact substrings only: case matters
        ("[[ A ]]", None, None),  # and so do spaces inside the brackets
        ("[A]", None, None),
        ("", None, None),
    ],
)
def test_rewardbench_verdict_follows_the_official_rule_and_differs_from_the_strict_parser(text, official, strict):
    assert parse_rewardbench_verdict(text) == official
    assert parse_verdict(text) == strict


@pytest.mark.parametrize(
    ("text", "rating"),
    [
        ("Helpful and correct.\n\n9", 9),
        ("Rating: 10", 10),
        ("7  \n", 7),  # stripped first
        ("**8**", None),  # anything after the number, markdown included, is unparseable
        ("Rating: 7.", None),
        ("Score: 8/10", 10),  # the official regex reads the trailing 10
        ("0", None),
        ("11", None),
        ("rating 10 out of 10", 10),
        ("I'd say 9 or so", None),
        ("", None),
    ],
)
def test_rating_follows_the_official_rewardbench2_regex(text, rating):
    assert parse_rating(text) == rating
